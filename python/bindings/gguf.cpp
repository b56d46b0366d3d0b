// diffrt._core.GGUFFile: the C++ GGUF reader, with zero-copy numpy views of tensor data.
#include <nanobind/ndarray.h>
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>

#include <cstring>
#include <filesystem>

#include <diffrt/error.h>
#include <diffrt/gguf.h>

#include "bindings.h"

namespace {

using diffrt::GGMLType;
using diffrt::GGUFFile;
using diffrt::GGUFType;
using diffrt::GGUFValue;

struct PyGGUFFile {
  std::unique_ptr<GGUFFile> f;
};

std::unique_ptr<GGUFFile> open_released(const std::filesystem::path& path) {
  nb::gil_scoped_release nogil;  // parsing a large file's tables takes a while
  return GGUFFile::open(path.string());
}

nb::object str_obj(std::string_view s) {
  // Strings in the file should be UTF-8; a stray byte must not make the whole file unreadable.
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), Py_ssize_t(s.size()), "replace");
  if (!o) throw nb::python_error();
  return nb::steal(o);
}

template <typename T>
T ld(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

nb::object scalar_obj(GGUFType t, const uint8_t* p) {
  switch (t) {
    case GGUFType::UINT8: return nb::int_(ld<uint8_t>(p));
    case GGUFType::INT8: return nb::int_(ld<int8_t>(p));
    case GGUFType::UINT16: return nb::int_(ld<uint16_t>(p));
    case GGUFType::INT16: return nb::int_(ld<int16_t>(p));
    case GGUFType::UINT32: return nb::int_(ld<uint32_t>(p));
    case GGUFType::INT32: return nb::int_(ld<int32_t>(p));
    case GGUFType::UINT64: return nb::int_(ld<uint64_t>(p));
    case GGUFType::INT64: return nb::int_(ld<int64_t>(p));
    case GGUFType::FLOAT32: return nb::float_(ld<float>(p));
    case GGUFType::FLOAT64: return nb::float_(ld<double>(p));
    case GGUFType::BOOL: return nb::bool_(p[0] != 0);
    default: return nb::none();
  }
}

size_t elem_size(GGUFType t) {
  switch (t) {
    case GGUFType::UINT8:
    case GGUFType::INT8:
    case GGUFType::BOOL: return 1;
    case GGUFType::UINT16:
    case GGUFType::INT16: return 2;
    case GGUFType::UINT32:
    case GGUFType::INT32:
    case GGUFType::FLOAT32: return 4;
    default: return 8;
  }
}

nb::object value_obj(const GGUFValue& v) {
  if (v.type == GGUFType::STRING) return str_obj(v.str);
  if (v.type != GGUFType::ARRAY) return scalar_obj(v.type, v.data);
  nb::list out;
  if (v.elem_type == GGUFType::STRING) {
    for (std::string_view s : v.strs) out.append(str_obj(s));
  } else {
    size_t esz = elem_size(v.elem_type);
    for (uint64_t i = 0; i < v.count; ++i) out.append(scalar_obj(v.elem_type, v.data + i * esz));
  }
  return out;
}

// Shape in numpy order (ggml's ne reversed). Types numpy cannot express element-wise (block
// quantised) are exposed as raw bytes: the last axis is the row's byte count.
nb::object tensor_view(nb::handle owner, const diffrt::TensorInfo& t) {
  std::vector<size_t> shape(t.ne.rbegin(), t.ne.rend());
  nb::dlpack::dtype dt;
  switch (t.type) {
    case GGMLType::F32: dt = nb::dtype<float>(); break;
    case GGMLType::F16: dt = {uint8_t(nb::dlpack::dtype_code::Float), 16, 1}; break;
    case GGMLType::BF16: dt = nb::dtype<uint16_t>(); break;  // numpy has no bfloat16
    default: dt = nb::dtype<uint8_t>(); shape.back() = diffrt::ggml_row_bytes(t.type, t.ne[0]);
  }
  nb::ndarray<nb::numpy, nb::ro> arr(const_cast<void*>(t.data), shape.size(), shape.data(), owner, nullptr, dt);
  return arr.cast();
}

}  // namespace

void register_gguf(nb::module_& m) {
  nb::class_<PyGGUFFile>(m, "GGUFFile",
                         "A GGUF file mapped read-only; tensor data are zero-copy views that keep it alive.")
      .def(
          "__init__",
          [](PyGGUFFile* self, const std::filesystem::path& path) {
            auto f = open_released(path);
            new (self) PyGGUFFile{std::move(f)};
          },
          nb::arg("path"))
      .def_static(
          "open", [](const std::filesystem::path& path) { return PyGGUFFile{open_released(path)}; }, nb::arg("path"))
      .def_prop_ro("path", [](const PyGGUFFile& s) { return s.f->path(); })
      .def_prop_ro("version", [](const PyGGUFFile& s) { return s.f->version(); })
      .def_prop_ro("alignment", [](const PyGGUFFile& s) { return s.f->alignment(); })
      .def_prop_ro("file_size", [](const PyGGUFFile& s) { return s.f->file_size(); })
      .def(
          "metadata",
          [](const PyGGUFFile& s) {
            nb::dict d;
            for (const auto& kv : s.f->metadata()) d[str_obj(kv.first)] = value_obj(kv.second);
            return d;
          },
          "All metadata as a dict key -> int/float/bool/str/list, in file order.")
      .def(
          "tensor_infos",
          [](const PyGGUFFile& s) {
            nb::list out;
            for (const auto& t : s.f->tensors()) {
              nb::list shape;
              for (auto it = t.ne.rbegin(); it != t.ne.rend(); ++it) shape.append(*it);
              out.append(nb::make_tuple(str_obj(t.name), diffrt::ggml_type_name(t.type), nb::tuple(shape), t.nbytes,
                                        t.file_offset));
            }
            return out;
          },
          "List of (name, type_name, shape in numpy order, nbytes, absolute file offset).")
      .def(
          "tensor_data",
          [](nb::handle self, const std::string& name) {
            const PyGGUFFile& s = nb::cast<const PyGGUFFile&>(self);
            return tensor_view(self, s.f->tensor(name));
          },
          nb::arg("name"),
          "Read-only numpy view of a tensor's bytes: float32, float16, uint16 (bfloat16 bits) or "
          "uint8 raw blocks (last axis = bytes per row) for quantised types.");
  m.def("ggml_type_supported", &diffrt::ggml_type_supported, nb::arg("type_id"),
        "True for the ggml types diffrt computes with (F32, F16, BF16, Q8_0).");
}
