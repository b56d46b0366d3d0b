// Small helpers shared by the binding files of both modules (_core and _cuda): argument checks that
// raise ValueError, and numpy arrays that own a heap buffer.
#pragma once
#include <diffrt/error.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstring>
#include <initializer_list>
#include <vector>

namespace diffrt_py {

// Bad arguments raise diffrt::InvalidArgument (ValueError in Python).
inline void need(bool ok, const char* what) {
  if (!ok) throw diffrt::InvalidArgument(what);
}

// A numpy array of `shape` whose buffer the array owns; contents uninitialised (the caller fills it).
template <class T>
nanobind::ndarray<nanobind::numpy, T> empty_array(std::vector<size_t> shape) {
  size_t n = 1;
  for (size_t s : shape) n *= s;
  T* data = new T[n > 0 ? n : 1];
  nanobind::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
  return nanobind::ndarray<nanobind::numpy, T>(data, shape.size(), shape.data(), owner);
}

// As empty_array, filled with zero bytes.
template <class T>
nanobind::ndarray<nanobind::numpy, T> zeros_array(std::vector<size_t> shape) {
  auto a = empty_array<T>(shape);
  std::memset(a.data(), 0, sizeof(T) * a.size());
  return a;
}

// A numpy copy of the prod(shape) elements at src.
template <class T>
nanobind::ndarray<nanobind::numpy, T> copy_array(const T* src, std::initializer_list<size_t> shape) {
  auto a = empty_array<T>(std::vector<size_t>(shape));
  std::memcpy(a.data(), src, sizeof(T) * a.size());
  return a;
}

}  // namespace diffrt_py
