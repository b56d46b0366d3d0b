// GGUF v2/v3 reader. The file is mapped read-only and parsed eagerly; every count, length,
// dimension and offset read from it is checked against the bytes that remain *before* it is used
// (a hostile count of 2^41 must fail at once, not after allocating or looping).
#include "diffrt/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "diffrt/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the GGUF reader assumes a little-endian host");

namespace diffrt {

namespace {

constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

struct TypeTraits {
  const char* name;
  int64_t block;  // elements per block; 0 = unknown type
  size_t bytes;   // bytes per block
};

// Standard ggml types whose block layout is fixed and public. Q8_1 (id 9) is left out on purpose:
// its block size differs between ggml versions.
TypeTraits type_traits(uint32_t t) {
  switch (t) {
    case 0: return {"F32", 1, 4};
    case 1: return {"F16", 1, 2};
    case 2: return {"Q4_0", 32, 18};
    case 3: return {"Q4_1", 32, 20};
    case 6: return {"Q5_0", 32, 22};
    case 7: return {"Q5_1", 32, 24};
    case 8: return {"Q8_0", 32, 34};
    case 10: return {"Q2_K", 256, 84};
    case 11: return {"Q3_K", 256, 110};
    case 12: return {"Q4_K", 256, 144};
    case 13: return {"Q5_K", 256, 176};
    case 14: return {"Q6_K", 256, 210};
    case 15: return {"Q8_K", 256, 292};
    case 16: return {"IQ2_XXS", 256, 66};
    case 17: return {"IQ2_XS", 256, 74};
    case 18: return {"IQ3_XXS", 256, 98};
    case 19: return {"IQ1_S", 256, 50};
    case 20: return {"IQ4_NL", 32, 18};
    case 21: return {"IQ3_S", 256, 110};
    case 22: return {"IQ2_S", 256, 82};
    case 23: return {"IQ4_XS", 256, 136};
    case 24: return {"I8", 1, 1};
    case 25: return {"I16", 1, 2};
    case 26: return {"I32", 1, 4};
    case 27: return {"I64", 1, 8};
    case 28: return {"F64", 1, 8};
    case 29: return {"IQ1_M", 256, 56};
    case 30: return {"BF16", 1, 2};
    case 34: return {"TQ1_0", 256, 54};
    case 35: return {"TQ2_0", 256, 66};
    case 39: return {"MXFP4", 32, 17};
    default: return {nullptr, 0, 0};
  }
}

// Row bytes without throwing: false if the type is unknown, n is not a whole number of blocks,
// or the result overflows.
bool row_bytes_checked(uint32_t t, int64_t n, size_t* out) {
  TypeTraits tr = type_traits(t);
  if (tr.block == 0 || n < 0 || n % tr.block != 0) return false;
  uint64_t blocks = static_cast<uint64_t>(n / tr.block);
  if (blocks != 0 && tr.bytes > std::numeric_limits<size_t>::max() / blocks) return false;
  *out = static_cast<size_t>(blocks * tr.bytes);
  return true;
}

size_t scalar_size(GGUFType t) {
  switch (t) {
    case GGUFType::UINT8:
    case GGUFType::INT8:
    case GGUFType::BOOL: return 1;
    case GGUFType::UINT16:
    case GGUFType::INT16: return 2;
    case GGUFType::UINT32:
    case GGUFType::INT32:
    case GGUFType::FLOAT32: return 4;
    case GGUFType::UINT64:
    case GGUFType::INT64:
    case GGUFType::FLOAT64: return 8;
    default: return 0;  // STRING, ARRAY, unknown
  }
}

bool is_integer(GGUFType t) {
  switch (t) {
    case GGUFType::UINT8:
    case GGUFType::INT8:
    case GGUFType::UINT16:
    case GGUFType::INT16:
    case GGUFType::UINT32:
    case GGUFType::INT32:
    case GGUFType::UINT64:
    case GGUFType::INT64:
    case GGUFType::BOOL: return true;
    default: return false;
  }
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

[[noreturn]] void fail(const std::string& key, const std::string& what) {
  throw FormatError("metadata key '" + key + "': " + what);
}

int64_t int_at(GGUFType t, const uint8_t* p, const std::string& key) {
  switch (t) {
    case GGUFType::UINT8: return load<uint8_t>(p);
    case GGUFType::INT8: return load<int8_t>(p);
    case GGUFType::BOOL: return load<uint8_t>(p) != 0;
    case GGUFType::UINT16: return load<uint16_t>(p);
    case GGUFType::INT16: return load<int16_t>(p);
    case GGUFType::UINT32: return load<uint32_t>(p);
    case GGUFType::INT32: return load<int32_t>(p);
    case GGUFType::INT64: return load<int64_t>(p);
    case GGUFType::UINT64: {
      uint64_t v = load<uint64_t>(p);
      if (v > uint64_t(std::numeric_limits<int64_t>::max())) fail(key, "value out of int64 range");
      return static_cast<int64_t>(v);
    }
    default: fail(key, "expected an integer");
  }
}

double float_at(GGUFType t, const uint8_t* p, const std::string& key) {
  if (t == GGUFType::FLOAT32) return load<float>(p);
  if (t == GGUFType::FLOAT64) return load<double>(p);
  if (is_integer(t) && t != GGUFType::BOOL) return static_cast<double>(int_at(t, p, key));
  fail(key, "expected a number");
}

// Cursor over the mapped bytes; `what` names the thing being read for truncation errors.
struct Cursor {
  const std::string& path;
  const uint8_t* base;
  size_t size;
  size_t pos = 0;
  std::string what = "header";

  size_t remaining() const { return size - pos; }
  [[noreturn]] void error(const std::string& msg) const { throw FormatError(path + ": " + msg); }
  [[noreturn]] void truncated() const { error("truncated while reading " + what); }
  const uint8_t* take(size_t n) {
    if (n > remaining()) truncated();
    const uint8_t* p = base + pos;
    pos += n;
    return p;
  }
  uint32_t u32() { return load<uint32_t>(take(4)); }
  uint64_t u64() { return load<uint64_t>(take(8)); }
  std::string_view str() {
    uint64_t n = u64();
    if (n > remaining()) {
      error("string length " + std::to_string(n) + " exceeds the " + std::to_string(remaining()) +
            " bytes left while reading " + what);
    }
    return {reinterpret_cast<const char*>(take(n)), static_cast<size_t>(n)};
  }
};

const char* gguf_type_name(uint32_t t) {
  static const char* names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                "bool",  "string", "array",  "uint64", "int64",  "float64"};
  return t < 13 ? names[t] : "unknown";
}

GGUFType read_value_type(Cursor& c) {
  uint32_t t = c.u32();
  if (t > static_cast<uint32_t>(GGUFType::FLOAT64)) {
    c.error("invalid value type " + std::to_string(t) + " in " + c.what);
  }
  return static_cast<GGUFType>(t);
}

GGUFValue read_value(Cursor& c) {
  GGUFValue v;
  v.type = read_value_type(c);
  if (v.type == GGUFType::STRING) {
    v.str = c.str();
    v.data = reinterpret_cast<const uint8_t*>(v.str.data());
  } else if (v.type == GGUFType::ARRAY) {
    v.elem_type = read_value_type(c);
    v.count = c.u64();
    if (v.elem_type == GGUFType::ARRAY) c.error("nested arrays are not supported (" + c.what + ")");
    // Every element takes at least its fixed size (8 bytes for a string's length): bound the
    // count by the bytes left before reserving or looping.
    size_t esz = v.elem_type == GGUFType::STRING ? 8 : scalar_size(v.elem_type);
    if (v.count > c.remaining() / esz) {
      c.error("array of " + std::to_string(v.count) + " " + gguf_type_name(uint32_t(v.elem_type)) + " exceeds the " +
              std::to_string(c.remaining()) + " bytes left (" + c.what + ")");
    }
    v.data = c.base + c.pos;
    if (v.elem_type == GGUFType::STRING) {
      v.strs.reserve(v.count);
      for (uint64_t i = 0; i < v.count; ++i) v.strs.push_back(c.str());
    } else {
      c.take(v.count * esz);
    }
  } else {
    v.data = c.take(scalar_size(v.type));
  }
  return v;
}

// GGUF strings are UTF-8; keys and tensor names are checked so that they round-trip through Python.
bool valid_utf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || len > n - i) return false;
    uint32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // reject overlong forms, surrogates and code points past U+10FFFF
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return false;
    i += len;
  }
  return true;
}

// Unmaps on destruction unless released into the GGUFFile.
struct Mapping {
  void* p = nullptr;
  size_t n = 0;
  ~Mapping() {
    if (p) munmap(p, n);
  }
};

std::string quoted(std::string_view s) {
  // Names come from the file: cap their length and escape non-ASCII bytes so an error message is
  // always printable and valid UTF-8.
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 200; ++i) {
    unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch >= 0x20 && ch < 0x7f) {
      out += static_cast<char>(ch);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", ch);
      out += b;
    }
  }
  if (s.size() > 200) out += "...";
  return out + "'";
}

}  // namespace

const char* ggml_type_name(GGMLType t) {
  const char* n = type_traits(static_cast<uint32_t>(t)).name;
  if (n) return n;
  // Unknown ids: a stable string per id so the pointer stays valid.
  thread_local std::string buf;
  buf = "type" + std::to_string(static_cast<uint32_t>(t));
  return buf.c_str();
}

bool ggml_type_supported(uint32_t t) {
  return t == uint32_t(GGMLType::F32) || t == uint32_t(GGMLType::F16) || t == uint32_t(GGMLType::BF16) ||
         t == uint32_t(GGMLType::Q8_0);
}

size_t ggml_row_bytes(GGMLType t, int64_t n) {
  size_t out = 0;
  if (!row_bytes_checked(static_cast<uint32_t>(t), n, &out)) {
    throw InvalidArgument(std::string("ggml_row_bytes: cannot size ") + std::to_string(n) + " elements of " +
                          ggml_type_name(t));
  }
  return out;
}

int64_t TensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // checked against overflow when the file was opened
  return n;
}

// ---- GGUFValue accessors ------------------------------------------------------------------------

int64_t GGUFValue::as_int(const std::string& key) const {
  if (!is_integer(type)) fail(key, "expected an integer");
  return int_at(type, data, key);
}

double GGUFValue::as_float(const std::string& key) const {
  if (type == GGUFType::ARRAY || type == GGUFType::STRING) fail(key, "expected a number");
  return float_at(type, data, key);
}

bool GGUFValue::as_bool(const std::string& key) const {
  if (type != GGUFType::BOOL) fail(key, "expected a bool");
  return data[0] != 0;
}

std::string GGUFValue::as_string(const std::string& key) const {
  if (type != GGUFType::STRING) fail(key, "expected a string");
  return std::string(str);
}

std::vector<int64_t> GGUFValue::as_int_array(const std::string& key) const {
  if (type != GGUFType::ARRAY || !is_integer(elem_type)) fail(key, "expected an array of integers");
  std::vector<int64_t> out(count);
  size_t esz = scalar_size(elem_type);
  for (uint64_t i = 0; i < count; ++i) out[i] = int_at(elem_type, data + i * esz, key);
  return out;
}

std::vector<double> GGUFValue::as_float_array(const std::string& key) const {
  if (type != GGUFType::ARRAY || elem_type == GGUFType::STRING || elem_type == GGUFType::BOOL ||
      scalar_size(elem_type) == 0) {
    fail(key, "expected an array of numbers");
  }
  std::vector<double> out(count);
  size_t esz = scalar_size(elem_type);
  for (uint64_t i = 0; i < count; ++i) out[i] = float_at(elem_type, data + i * esz, key);
  return out;
}

// ---- GGUFFile -----------------------------------------------------------------------------------

GGUFFile::~GGUFFile() {
  if (base_ && size_) munmap(const_cast<uint8_t*>(base_), size_);
}

std::unique_ptr<GGUFFile> GGUFFile::open(const std::string& path) {
  std::unique_ptr<GGUFFile> f(new GGUFFile());
  f->path_ = path;

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw FormatError(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw FormatError(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FormatError(path + ": not a regular file");
  }
  Mapping map;
  map.n = static_cast<size_t>(st.st_size);
  if (map.n > 0) {
    void* p = mmap(nullptr, map.n, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw FormatError(path + ": cannot map: " + std::strerror(e));
    }
    map.p = p;
  }
  ::close(fd);  // the mapping keeps the file alive

  Cursor c{path, static_cast<const uint8_t*>(map.p), map.n};
  if (map.n < 4 || std::memcmp(c.base, "GGUF", 4) != 0) {
    // Says what the file is not, never what its bytes are: a server that opens paths for clients
    // (/api/create) must not become a way to read the first bytes of any file it can open.
    c.error(map.n ? "not a GGUF file (it does not begin with the magic 'GGUF')" : "not a GGUF file (empty file)");
  }
  c.pos = 4;
  f->version_ = c.u32();
  if (f->version_ != 2 && f->version_ != 3) {
    c.error("unsupported GGUF version " + std::to_string(f->version_) + " (diffrt reads little-endian GGUF v2 and v3)");
  }
  uint64_t n_tensors = c.u64();
  uint64_t n_kv = c.u64();
  // Each tensor info takes at least 8+4+4+8 bytes, each key/value at least 8+4 bytes.
  if (n_tensors > c.remaining() / 24) {
    c.error("tensor count " + std::to_string(n_tensors) + " exceeds what " + std::to_string(c.remaining()) +
            " bytes can hold");
  }
  if (n_kv > c.remaining() / 12) {
    c.error("metadata count " + std::to_string(n_kv) + " exceeds what " + std::to_string(c.remaining()) +
            " bytes can hold");
  }

  // Metadata.
  f->kv_.reserve(n_kv);
  std::unordered_set<std::string_view> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    c.what = "metadata key " + std::to_string(i);
    std::string_view key = c.str();
    if (!valid_utf8(key)) c.error("metadata key " + quoted(key) + " is not valid UTF-8");
    c.what = "metadata value " + std::to_string(i) + " (" + quoted(key) + ")";
    GGUFValue v = read_value(c);
    if (!keys.insert(key).second) c.error("duplicate metadata key " + quoted(key));
    f->kv_.emplace_back(std::string(key), std::move(v));
  }

  if (const GGUFValue* a = f->find("general.alignment")) {
    if (a->type == GGUFType::ARRAY || !is_integer(a->type) || a->type == GGUFType::BOOL) {
      c.error("general.alignment must be an integer");
    }
    int64_t al = int_at(a->type, a->data, "general.alignment");
    if (al <= 0 || (al & (al - 1)) != 0 || al > (int64_t(1) << 30)) {
      c.error("general.alignment " + std::to_string(al) + " is not a power of two in [1, 2^30]");
    }
    f->alignment_ = static_cast<size_t>(al);
  }

  // Tensor table: validate each entry's shape and type; offsets are checked once the data
  // section's start is known.
  std::vector<uint64_t> offsets;
  offsets.reserve(n_tensors);
  f->tensors_.reserve(n_tensors);
  std::unordered_set<std::string_view> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    c.what = "tensor info " + std::to_string(i);
    std::string_view name = c.str();
    c.what += " (" + quoted(name) + ")";
    std::string tname = "tensor " + quoted(name);
    if (!valid_utf8(name)) c.error(tname + " name is not valid UTF-8");
    if (!names.insert(name).second) c.error("duplicate " + tname);
    uint32_t n_dims = c.u32();
    if (n_dims == 0 || n_dims > kMaxDims) {
      c.error(tname + " has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
    }
    TensorInfo t;
    t.name = std::string(name);
    t.ne.resize(n_dims);
    int64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = c.u64();
      if (ne == 0 || ne > uint64_t(std::numeric_limits<int64_t>::max())) {
        c.error(tname + " has invalid size " + std::to_string(ne) + " in dimension " + std::to_string(d));
      }
      if (__builtin_mul_overflow(n_el, int64_t(ne), &n_el)) c.error(tname + ": element count overflows");
      t.ne[d] = int64_t(ne);
    }
    uint32_t type = c.u32();
    t.type = static_cast<GGMLType>(type);
    TypeTraits tr = type_traits(type);
    if (tr.block == 0) c.error(tname + " has unknown ggml type id " + std::to_string(type));
    size_t row = 0;
    if (!row_bytes_checked(type, t.ne[0], &row)) {
      c.error(tname + ": first dimension " + std::to_string(t.ne[0]) + " is not a multiple of the " + tr.name +
              " block size " + std::to_string(tr.block));
    }
    uint64_t rows = uint64_t(n_el / t.ne[0]);
    if (row != 0 && rows > std::numeric_limits<size_t>::max() / row) c.error(tname + ": byte size overflows");
    t.nbytes = row * rows;
    t.data = nullptr;
    offsets.push_back(c.u64());
    f->tensors_.push_back(std::move(t));
  }

  // Data section: starts at the next multiple of the alignment after the tables.
  c.what = "tensor data";
  size_t data_start = (c.pos + f->alignment_ - 1) / f->alignment_ * f->alignment_;
  if (n_tensors > 0 && data_start > map.n) c.truncated();
  size_t data_size = map.n - std::min(data_start, map.n);
  for (size_t i = 0; i < f->tensors_.size(); ++i) {
    TensorInfo& t = f->tensors_[i];
    uint64_t off = offsets[i];
    if (off % f->alignment_ != 0) {
      c.error("tensor " + quoted(t.name) + " offset " + std::to_string(off) + " is not a multiple of the alignment " +
              std::to_string(f->alignment_));
    }
    if (off > data_size || t.nbytes > data_size - off) {
      c.error("tensor " + quoted(t.name) + " (" + std::to_string(t.nbytes) + " bytes at data offset " +
              std::to_string(off) + ") extends past the end of the file (" + std::to_string(data_size) +
              " data bytes)");
    }
    t.data = c.base + data_start + off;
    t.file_offset = data_start + off;
  }

  f->base_ = static_cast<const uint8_t*>(map.p);
  f->size_ = map.n;
  map.p = nullptr;  // now owned by the GGUFFile
  return f;
}

const GGUFValue* GGUFFile::find(std::string_view key) const {
  for (const auto& kv : kv_) {
    if (kv.first == key) return &kv.second;
  }
  return nullptr;
}

const GGUFValue& GGUFFile::get(const std::string& key) const {
  const GGUFValue* v = find(key);
  if (!v) throw FormatError(path_ + ": missing key '" + key + "'");
  return *v;
}

const TensorInfo* GGUFFile::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const TensorInfo& GGUFFile::tensor(const std::string& name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) throw FormatError(path_ + ": missing tensor '" + name + "'");
  return *t;
}

}  // namespace diffrt
