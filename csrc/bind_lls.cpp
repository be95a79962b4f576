// pybind11 glue for csrc/lls: the on-device LLS engine (and its CUDA twins) as edgeml._C.LLSEngine.
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>

#include "bind_util.h"
#include "lls/engine.h"
#ifdef EDGEML_WITH_CUDA
#include "cuda/lls_cuda.h"
#endif

namespace py = pybind11;
using edgeml::bind::require;
namespace lls = edgeml::lls;

namespace {

std::vector<int32_t> labels_of(const py::object& obj, int n) {
  auto labels = require<int64_t>(obj, "labels", {n});
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<int32_t>(labels.data()[i]);
  return out;
}

py::array_t<float> images_of(const lls::Engine& e, const py::object& obj) {
  const auto& s = e.input_shape();
  auto x = require<float>(obj, "x", {-1, s[0], s[1], s[2]});
  if (x.shape(0) < 1 || x.shape(0) > e.batch())
    throw py::value_error("x: batch of " + std::to_string(x.shape(0)) + " samples; the engine was sized for 1.." +
                          std::to_string(e.batch()));
  return x;
}

py::dict optimizer_dict(const lls::OptimizerSpec& o) {
  py::dict d;
  d["name"] = o.name;
  d["lr"] = o.lr;
  d["momentum"] = o.momentum;
  d["dampening"] = o.dampening;
  d["nesterov"] = o.nesterov;
  d["weight_decay"] = o.weight_decay;
  d["betas"] = py::make_tuple(o.beta1, o.beta2);
  d["eps"] = o.eps;
  return d;
}

// An error message as a Python str: bytes of a hostile header that are not UTF-8 are replaced, not a new
// UnicodeDecodeError raised in place of the PackError.
py::str utf8_message(const char* text) {
  PyObject* str = PyUnicode_DecodeUTF8(text, static_cast<Py_ssize_t>(std::strlen(text)), "replace");
  if (!str) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(str);
}

struct EngineHandle {
  lls::Engine engine;
  EngineHandle(const std::string& path, int batch, size_t arena_bytes, int train_last, float lr,
               const std::string& optimizer, int threads)
      : engine(lls::read_pack(path), lls::EngineOptions{batch, arena_bytes, train_last, lr, optimizer, threads}) {}
};

py::tuple local_loss_grad(const py::object& a_obj, const py::object& labels_obj, const std::string& mode, int pool,
                          int classes, float temperature, float label_smoothing, const std::string& waveform,
                          const py::object& head_obj, bool on_cuda) {
  py::array a = py::reinterpret_borrow<py::array>(a_obj);
  if (a.ndim() != 2 && a.ndim() != 4) throw py::value_error("a: expected [B, N] or [B, C, H, W]");
  auto af = require<float>(a_obj, "a", std::vector<py::ssize_t>(static_cast<size_t>(a.ndim()), -1));
  const int batch = static_cast<int>(a.shape(0));
  lls::LocalHead head;
  head.mode = lls::parse_mode(mode);
  head.c = static_cast<int>(a.shape(1));
  head.h = a.ndim() == 4 ? static_cast<int>(a.shape(2)) : 1;
  head.w = a.ndim() == 4 ? static_cast<int>(a.shape(3)) : 1;
  head.pool = pool;
  head.k = classes;
  head.temperature = temperature;
  head.label_smoothing = label_smoothing;
  auto labels = labels_of(labels_obj, batch);
  for (int32_t l : labels)
    if (l < 0 || l >= classes) throw py::value_error("labels must lie in [0, classes)");
  std::vector<float> basis(static_cast<size_t>(classes) * head.dim());
  lls::BasisSpec spec;
  spec.k = classes;
  spec.waveform = waveform;
  lls::make_basis(spec, head.dim(), basis.data());
  std::vector<float> hv;
  if (head.mode == lls::LocalMode::LLS_M || head.mode == lls::LocalMode::LLS_MXM) {
    const py::ssize_t k = classes;
    auto h = head.mode == lls::LocalMode::LLS_M ? require<float>(head_obj, "head", {k})
                                                : require<float>(head_obj, "head", {k, k});
    hv.assign(h.data(), h.data() + h.size());
  }
  py::array_t<float> ga(a.request().shape);
  std::vector<float> ghead(hv.size()), scratch(head.scratch(batch));
  float loss = 0.0f;
  if (on_cuda) {
#ifdef EDGEML_WITH_CUDA
    if (head.mode == lls::LocalMode::CE) throw py::value_error("the CUDA twin covers lls, lls_m, lls_mxm");
    loss = edgeml::cuda::lls_local_loss_grad(head, batch, af.data(), labels.data(), basis.data(), hv.data(),
                                             hv.data(), ga.mutable_data(), ghead.data(), ghead.data());
#else
    throw std::runtime_error("edgeml._C was built without CUDA (rebuild with EDGEML_CUDA=ON)");
#endif
  } else {
    loss = lls::local_loss_grad(head, batch, af.data(), labels.data(), basis.data(), hv.data(), hv.data(),
                                ga.mutable_data(), ghead.data(), ghead.data(), scratch.data());
  }
  py::object gh = py::none();
  if (!hv.empty()) {
    py::array_t<float> g(static_cast<py::ssize_t>(ghead.size()));
    std::copy(ghead.begin(), ghead.end(), g.mutable_data());
    gh = head.mode == lls::LocalMode::LLS_MXM ? py::object(g.reshape({classes, classes})) : py::object(g);
  }
  return py::make_tuple(loss, ga, gh);
}

py::array_t<float> conv2d_forward(const py::object& x_obj, const py::object& w_obj, const py::object& b_obj,
                                  std::vector<int> stride, std::vector<int> padding, int groups, bool on_cuda) {
  auto x = require<float>(x_obj, "x", {-1, -1, -1, -1});
  auto w = require<float>(w_obj, "w", {-1, -1, -1, -1});
  if (stride.size() != 2 || padding.size() != 2) throw py::value_error("stride and padding are (h, w) pairs");
  lls::Conv2dShape s{static_cast<int>(x.shape(1)), static_cast<int>(w.shape(0)), static_cast<int>(x.shape(2)),
                     static_cast<int>(x.shape(3)), static_cast<int>(w.shape(2)), static_cast<int>(w.shape(3)),
                     stride[0], stride[1], padding[0], padding[1], groups};
  if (groups <= 0 || s.cin % groups || s.cout % groups || w.shape(1) * groups != s.cin || s.ho() <= 0 || s.wo() <= 0)
    throw py::value_error("conv2d: weight, groups and input do not fit");
  const float* bias = nullptr;
  py::array_t<float> b;
  if (!b_obj.is_none()) {
    b = require<float>(b_obj, "bias", {s.cout});
    bias = b.data();
  }
  const int batch = static_cast<int>(x.shape(0));
  py::array_t<float> y({batch, s.cout, s.ho(), s.wo()});
  if (on_cuda) {
#ifdef EDGEML_WITH_CUDA
    edgeml::cuda::lls_conv2d_forward(s, batch, x.data(), w.data(), bias, y.mutable_data());
#else
    throw std::runtime_error("edgeml._C was built without CUDA (rebuild with EDGEML_CUDA=ON)");
#endif
  } else {
    std::vector<float> scratch(std::max<size_t>(s.scratch(), 1));
    lls::conv2d_forward(s, batch, x.data(), w.data(), bias, y.mutable_data(), scratch.data());
  }
  return y;
}

// One optimizer step on flat float32 arrays, in place (p, s0, s1).
void optimizer_update(const py::object& p_obj, const py::object& g_obj, const py::object& s0_obj,
                      const py::object& s1_obj, long step, const std::string& name, float lr, float momentum,
                      float weight_decay, float beta1, float beta2, float eps, bool on_cuda) {
  auto p = require<float>(p_obj, "p", {-1});
  const py::ssize_t n = p.shape(0);
  auto g = require<float>(g_obj, "g", {n});
  auto s0 = require<float>(s0_obj, "s0", {n});
  auto s1 = require<float>(s1_obj, "s1", {n});
  lls::OptimizerSpec o;
  o.name = name, o.lr = lr, o.momentum = momentum, o.weight_decay = weight_decay;
  o.beta1 = beta1, o.beta2 = beta2, o.eps = eps;
  if (step < 1) throw py::value_error("step counts from 1");
  if (on_cuda) {
#ifdef EDGEML_WITH_CUDA
    edgeml::cuda::lls_optimizer_update(o, step, static_cast<size_t>(n), p.mutable_data(), g.data(),
                                       s0.mutable_data(), s1.mutable_data());
#else
    throw std::runtime_error("edgeml._C was built without CUDA (rebuild with EDGEML_CUDA=ON)");
#endif
  } else {
    lls::optimizer_update(o, step, static_cast<size_t>(n), p.mutable_data(), g.data(), s0.mutable_data(),
                          s1.mutable_data());
  }
}

}  // namespace

void bind_lls(py::module_& m) {
  static py::exception<lls::PackError> pack_error(m, "LLSPackError", PyExc_ValueError);
  static py::exception<lls::ArenaError> arena_error(m, "LLSArenaError", PyExc_MemoryError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const lls::PackError& e) {
      py::set_error(pack_error, utf8_message(e.what()));
    } catch (const lls::ArenaError& e) {
      py::set_error(arena_error, utf8_message(e.what()));
    }
  });

  py::class_<EngineHandle>(m, "LLSEngine", "The C++ LLS fine-tuning engine over one pack (csrc/lls).")
      .def(py::init<const std::string&, int, size_t, int, float, const std::string&, int>(), py::arg("path"),
           py::arg("batch"), py::arg("arena_bytes") = 0, py::arg("train_last") = -1, py::arg("lr") = -1.0f,
           py::arg("optimizer") = "", py::arg("threads") = 0,
           "threads: kernel threads (0: one per processor this process may use); a fixed count gives "
           "bit-identical results.")
      .def("train_step",
           [](EngineHandle& h, const py::object& x_obj, const py::object& labels_obj) {
             auto x = images_of(h.engine, x_obj);
             auto labels = labels_of(labels_obj, static_cast<int>(x.shape(0)));
             lls::StepResult r;
             {
               py::gil_scoped_release release;
               r = h.engine.train_step(x.data(), labels.data(), static_cast<int>(x.shape(0)));
             }
             return r.losses;
           },
           py::arg("x"), py::arg("labels"), "One step on x [n, C, H, W] float32, labels [n] int64 -> local losses.")
      .def("forward",
           [](EngineHandle& h, const py::object& x_obj) {
             auto x = images_of(h.engine, x_obj);
             py::array_t<float> logits({static_cast<int>(x.shape(0)), h.engine.classes()});
             {
               py::gil_scoped_release release;
               h.engine.forward(x.data(), static_cast<int>(x.shape(0)), logits.mutable_data());
             }
             return logits;
           },
           py::arg("x"), "Logits [n, classes] of x [n, C, H, W] float32.")
      .def("normalise",
           [](const EngineHandle& h, const py::object& obj, bool hwc) {
             const auto& s = h.engine.input_shape();
             auto im = hwc ? require<uint8_t>(obj, "images", {-1, s[1], s[2], s[0]})
                           : require<uint8_t>(obj, "images", {-1, s[0], s[1], s[2]});
             py::array_t<float> out({im.shape(0), static_cast<py::ssize_t>(s[0]), static_cast<py::ssize_t>(s[1]),
                                     static_cast<py::ssize_t>(s[2])});
             h.engine.normalise(im.data(), static_cast<int>(im.shape(0)), hwc, out.mutable_data());
             return out;
           },
           py::arg("images"), py::arg("hwc") = false, "uint8 images -> normalised float32 [n, C, H, W].")
      .def("get",
           [](const EngineHandle& h, const std::string& name) {
             auto v = h.engine.get(name);
             py::array_t<float> out(static_cast<py::ssize_t>(v.size()));
             std::copy(v.begin(), v.end(), out.mutable_data());
             return out;
           },
           py::arg("name"), "A float32 tensor of the pack (flat copy).")
      .def("state",
           [](const EngineHandle& h, const std::string& name, int which) {
             auto v = h.engine.state(name, which);
             py::array_t<float> out(static_cast<py::ssize_t>(v.size()));
             std::copy(v.begin(), v.end(), out.mutable_data());
             return out;
           },
           py::arg("name"), py::arg("which") = 0,
           "Optimizer state of a trainable tensor (flat copy): 0 = SGD momentum / AdamW exp_avg, 1 = exp_avg_sq.")
      .def("set",
           [](EngineHandle& h, const std::string& name, const py::object& obj) {
             auto a = require<float>(obj, "values", {-1});
             h.engine.set(name, std::vector<float>(a.data(), a.data() + a.size()));
           },
           py::arg("name"), py::arg("values"))
      .def("save", [](const EngineHandle& h, const std::string& path) { h.engine.save(path); }, py::arg("path"),
           "Write the pack with the current weights (atomically).")
      .def_property_readonly("classes", [](const EngineHandle& h) { return h.engine.classes(); })
      .def_property_readonly("batch", [](const EngineHandle& h) { return h.engine.batch(); })
      .def_property_readonly("threads", [](const EngineHandle& h) { return h.engine.threads(); })
      .def_property_readonly("input_shape", [](const EngineHandle& h) { return h.engine.input_shape(); })
      .def_property_readonly("required_bytes", [](const EngineHandle& h) { return h.engine.required_bytes(); })
      .def_property_readonly("arena_bytes", [](const EngineHandle& h) { return h.engine.arena_capacity(); })
      .def_property_readonly("arena_peak", [](const EngineHandle& h) { return h.engine.arena_peak(); })
      .def_property_readonly("int8_layers", [](const EngineHandle& h) { return h.engine.int8_layers(); },
                             "frozen conv/linear layers that run the int8 GEMM")
      .def_property_readonly("int8_workspace_bytes",
                             [](const EngineHandle& h) { return h.engine.int8_workspace_bytes(); },
                             "the int8 GEMM's packing buffers (allocated at load, outside the arena)")
      .def_property_readonly("trainable_tensors", [](const EngineHandle& h) { return h.engine.trainable_tensors(); })
      .def_property_readonly("optimizer", [](const EngineHandle& h) { return h.engine.optimizer().name; })
      .def_property_readonly("optimizer_spec", [](const EngineHandle& h) { return optimizer_dict(h.engine.optimizer()); },
                             "The optimizer the engine steps with (the pack's, with the run's overrides).")
      .def_property_readonly("trainable_blocks", [](const EngineHandle& h) {
        std::vector<int> out;
        for (size_t i = 0; i < h.engine.blocks().size(); ++i)
          if (h.engine.blocks()[i].trainable) out.push_back(static_cast<int>(i));
        return out;
      });

  m.def("lls_read_pack_header",
        [](const std::string& path) { return lls::read_pack(path).header_text; }, py::arg("path"),
        "Validate a pack with the C++ reader and return its header JSON text.");
  m.def("lls_optimizer_defaults", [] { return optimizer_dict(lls::OptimizerSpec{}); },
        "The C++ engine's optimizer defaults (what a pack header without those fields trains with).");
  m.def("lls_basis",
        [](int classes, int dim, const std::string& waveform) {
          if (classes < 1 || dim < 1) throw py::value_error("classes and dim must be positive");
          lls::BasisSpec spec;
          spec.k = classes;
          spec.waveform = waveform;
          py::array_t<float> out({classes, dim});
          lls::make_basis(spec, dim, out.mutable_data());
          return out;
        },
        py::arg("classes"), py::arg("dim"), py::arg("waveform") = "square", "The C++ basis [K, D].");
  m.def("lls_local_loss_grad", &local_loss_grad, py::arg("a"), py::arg("labels"), py::arg("mode"), py::arg("pool"),
        py::arg("classes"), py::arg("temperature"), py::arg("label_smoothing"), py::arg("waveform"),
        py::arg("head") = py::none(), py::arg("cuda") = false, "(loss, dL/da, dL/dhead) of the C++ local loss.");
  m.def("lls_conv2d_forward", &conv2d_forward, py::arg("x"), py::arg("w"), py::arg("bias") = py::none(),
        py::arg("stride") = std::vector<int>{1, 1}, py::arg("padding") = std::vector<int>{0, 0},
        py::arg("groups") = 1, py::arg("cuda") = false, "The engine's conv2d forward (CPU or its CUDA twin).");
  m.def("lls_optimizer_update", &optimizer_update, py::arg("p"), py::arg("g"), py::arg("s0"), py::arg("s1"),
        py::arg("step"), py::arg("name"), py::arg("lr"), py::arg("momentum") = 0.9f, py::arg("weight_decay") = 0.0f,
        py::arg("beta1") = 0.9f, py::arg("beta2") = 0.999f, py::arg("eps") = 1e-8f, py::arg("cuda") = false,
        "One in-place optimizer step (sgd | adamw) on flat arrays (CPU or its CUDA twin).");
#ifdef EDGEML_WITH_CUDA
  m.attr("lls_cuda_built") = true;
#else
  m.attr("lls_cuda_built") = false;
#endif
}
