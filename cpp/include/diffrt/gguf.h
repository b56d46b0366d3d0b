// GGUF v3 reader: mmap'd, zero-copy, every count/length/offset bounds-checked against the file.
//
// Contract:
//  - GGUFFile::open() maps the file read-only and parses the header, all metadata and the tensor
//    table eagerly. Any inconsistency throws diffrt::FormatError naming the path and what is wrong;
//    after open() returns, every TensorInfo::data points inside the mapping with nbytes available.
//  - Values and tensor data are views into the mapping: valid while the GGUFFile lives.
//  - A GGUFFile is immutable after open(): safe to read from many threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace diffrt {

// Standard ggml type ids (only those diffrt reads or writes are named).
enum class GGMLType : uint32_t { F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30 };
const char* ggml_type_name(GGMLType t);  // "F32", "F16", "Q8_0", "BF16", or "type<N>"
bool ggml_type_supported(uint32_t t);
// Bytes for n elements of the given type (n must be a multiple of the block size for Q8_0).
size_t ggml_row_bytes(GGMLType t, int64_t n);

// GGUF metadata value types (spec numbering).
enum class GGUFType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12
};

struct GGUFValue {
  GGUFType type = GGUFType::UINT8;
  GGUFType elem_type = GGUFType::UINT8;  // for ARRAY
  uint64_t count = 1;                    // array length (1 for scalars)
  const uint8_t* data = nullptr;         // scalars / arrays of fixed-size elements: raw LE bytes
  std::string_view str;                  // STRING
  std::vector<std::string_view> strs;    // ARRAY of STRING

  // Typed accessors; throw FormatError (naming `key`) on a type mismatch.
  int64_t as_int(const std::string& key) const;   // any integer type or bool
  double as_float(const std::string& key) const;  // float32/64 or integer
  bool as_bool(const std::string& key) const;
  std::string as_string(const std::string& key) const;
  std::vector<int64_t> as_int_array(const std::string& key) const;  // integer/bool arrays
  std::vector<double> as_float_array(const std::string& key) const;
};

struct TensorInfo {
  std::string name;
  GGMLType type;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the fastest-varying (contiguous) dimension
  const void* data;         // inside the mapping, aligned to the file's alignment
  size_t nbytes;
  uint64_t file_offset = 0;  // absolute byte offset of `data` in the file
  int64_t n_elements() const;
};

class GGUFFile {
 public:
  static std::unique_ptr<GGUFFile> open(const std::string& path);
  ~GGUFFile();
  GGUFFile(const GGUFFile&) = delete;
  GGUFFile& operator=(const GGUFFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  size_t file_size() const { return size_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GGUFValue>>& metadata() const { return kv_; }
  const GGUFValue* find(std::string_view key) const;   // nullptr if absent
  const GGUFValue& get(const std::string& key) const;  // FormatError "missing key" if absent

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  const TensorInfo& tensor(const std::string& name) const;  // FormatError "missing tensor"

 private:
  GGUFFile() = default;
  std::string path_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::vector<std::pair<std::string, GGUFValue>> kv_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace diffrt
