// Argument checks shared by the pybind11 glue: a bad array becomes a Python TypeError/ValueError
// naming the argument, never a crash inside a kernel.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <sstream>
#include <string>
#include <vector>

namespace edgeml::bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

// Require dtype T, C-contiguity, and a shape where -1 means "any extent".
template <typename T>
py::array_t<T> require(const py::handle& obj, const char* name, const std::vector<py::ssize_t>& shape) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + ": expected a numpy array, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const py::dtype want = py::dtype::of<T>();
  if (!a.dtype().is(want) && !a.dtype().equal(want)) {
    throw py::type_error(std::string(name) + ": expected dtype " + std::string(py::str(want)) + ", got " +
                         std::string(py::str(a.dtype())) + " (convert with .astype)");
  }
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok) {
    std::ostringstream s;
    s << name << ": expected shape (";
    for (size_t i = 0; i < shape.size(); ++i) {
      s << (i ? ", " : "");
      if (shape[i] < 0) s << "*"; else s << shape[i];
    }
    s << "), got " << shape_str(a);
    throw py::value_error(s.str());
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + ": array must be C-contiguous (use numpy.ascontiguousarray)");
  }
  return py::reinterpret_borrow<py::array_t<T>>(a);
}

inline void require_positive(long value, const char* name) {
  if (value <= 0) throw py::value_error(std::string(name) + " must be positive, got " + std::to_string(value));
}

}  // namespace edgeml::bind
