"""Neural-network building blocks shared by edgeml models: spiking neurons and the multi-modal mixer."""

from edgeml.nn.mixer import MixerBlock
from edgeml.nn.spiking import LIF, SpikingTemporalModulator, reset_spike_stats, spike, spike_rates, surrogate_grad

__all__ = ["LIF", "MixerBlock", "SpikingTemporalModulator", "reset_spike_stats", "spike", "spike_rates",
           "surrogate_grad"]
