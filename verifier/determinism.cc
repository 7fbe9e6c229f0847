#include "verifier/determinism.h"

#include <dlfcn.h>
#include <link.h>
#include <torch/csrc/api/include/torch/version.h>

#include <cstdlib>
#include <vector>

namespace tributary::verifier {
namespace {

constexpr std::string_view kPrefix = "tributary.dclass.v1";

// Field values may not contain the separators of the canonical form.
std::string Clean(std::string_view value) {
  std::string out;
  for (char c : value) {
    out.push_back((c == ';' || c == '\n' || c == '\r') ? ' ' : c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string Isa() {
  // Features that change which ATen (DEFAULT/AVX2/AVX512) or BLAS kernels run.
  __builtin_cpu_init();
  std::string out;
  auto add = [&out](const char* name, bool present) {
    if (!present) return;
    if (!out.empty()) out += ',';
    out += name;
  };
  add("avx", __builtin_cpu_supports("avx"));
  add("avx2", __builtin_cpu_supports("avx2"));
  add("fma", __builtin_cpu_supports("fma"));
  add("avx512f", __builtin_cpu_supports("avx512f"));
  add("avx512bw", __builtin_cpu_supports("avx512bw"));
  add("avx512vl", __builtin_cpu_supports("avx512vl"));
  add("avx512dq", __builtin_cpu_supports("avx512dq"));
  add("avx512vnni", __builtin_cpu_supports("avx512vnni"));
  add("avx512bf16", __builtin_cpu_supports("avx512bf16"));
  return out.empty() ? "none" : out;
}

std::string Env() {
  std::string out;
  for (const char* key :
       {"ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"}) {
    const char* value = std::getenv(key);
    if (value == nullptr || *value == '\0') continue;
    if (!out.empty()) out += ',';
    out += std::string(key) + "=" + value;
  }
  return out;
}

int FindBlasPath(struct dl_phdr_info* info, size_t, void* data) {
  std::string_view name = info->dlpi_name ? info->dlpi_name : "";
  // A GPU BLAS (cuBLAS, loaded by a CUDA libtorch) does no CPU arithmetic.
  if (name.find("cublas") != std::string_view::npos) return 0;
  if (name.find("blas") != std::string_view::npos ||
      name.find("mkl_core") != std::string_view::npos) {
    static_cast<std::string*>(data)->assign(name);
    return 1;
  }
  return 0;
}

void ProbeBlas(std::string& blas, std::string& core) {
  using GetString = char* (*)();
  if (auto config = reinterpret_cast<GetString>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
    blas = Clean(config());
    if (auto name = reinterpret_cast<GetString>(dlsym(RTLD_DEFAULT, "openblas_get_corename"))) {
      core = Clean(name());
    }
    return;
  }
  std::string path;
  dl_iterate_phdr(FindBlasPath, &path);
  blas = path.empty() ? "unknown" : Clean(path);
  core = "unknown";
}

Result<int> ParseThreads(std::string_view text) {
  if (text.empty() || text.size() > 4) return InvalidArgument("bad thread count in class");
  int n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return InvalidArgument("bad thread count in class");
    n = n * 10 + (c - '0');
  }
  if (n < 1) return InvalidArgument("class thread count must be >= 1");
  return n;
}

// "cuda:<model>:sm<major><minor>:driver<version>:cudart<version>" from the CUDA driver API,
// opened at run time so that a CPU-only build needs no CUDA headers or libraries. Whatever
// cannot be read is "unknown" (a class that matches nothing but itself).
std::string ProbeCudaDevice(int index) {
  std::string model = "unknown", sm = "unknown", driver = "unknown", runtime = "unknown";
  if (void* cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    using Init = int (*)(unsigned);
    using Get = int (*)(int*, int);
    using Name = int (*)(char*, int, int);
    using Attribute = int (*)(int*, int, int);
    using Version = int (*)(int*);
    auto init = reinterpret_cast<Init>(dlsym(cuda, "cuInit"));
    auto get = reinterpret_cast<Get>(dlsym(cuda, "cuDeviceGet"));
    auto name = reinterpret_cast<Name>(dlsym(cuda, "cuDeviceGetName"));
    auto attribute = reinterpret_cast<Attribute>(dlsym(cuda, "cuDeviceGetAttribute"));
    auto version = reinterpret_cast<Version>(dlsym(cuda, "cuDriverGetVersion"));
    int dev = 0;
    if (init && get && init(0) == 0 && get(&dev, index) == 0) {
      char buffer[256] = {};
      if (name && name(buffer, sizeof(buffer) - 1, dev) == 0) model = Clean(buffer);
      int major = 0, minor = 0;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
      if (attribute && attribute(&major, 75, dev) == 0 && attribute(&minor, 76, dev) == 0) {
        sm = "sm" + std::to_string(major) + std::to_string(minor);
      }
    }
    int v = 0;
    if (version && version(&v) == 0) driver = "driver" + std::to_string(v);
    dlclose(cuda);
  }
  // The CUDA runtime libtorch was built with is already loaded when libtorch_cuda is.
  using RuntimeVersion = int (*)(int*);
  if (auto rv = reinterpret_cast<RuntimeVersion>(dlsym(RTLD_DEFAULT, "cudaRuntimeGetVersion"))) {
    int v = 0;
    if (rv(&v) == 0) runtime = "cudart" + std::to_string(v);
  }
  return "cuda:" + model + ":" + sm + ":" + driver + ":" + runtime;
}

}  // namespace

std::string DeterminismClass::Canonical() const {
  std::string out(kPrefix);
  out += ";device=" + Clean(device);
  out += ";torch=" + Clean(torch);
  out += ";threads=" + std::to_string(threads);
  out += ";blas=" + Clean(blas);
  out += ";core=" + Clean(blas_core);
  out += ";isa=" + Clean(isa);
  out += ";env=" + Clean(env);
  return out;
}

Result<DeterminismClass> DeterminismClass::Parse(std::string_view canonical) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t semi = canonical.find(';', start);
    parts.push_back(canonical.substr(start, semi == std::string_view::npos ? semi : semi - start));
    if (semi == std::string_view::npos) break;
    start = semi + 1;
  }
  static const char* kKeys[] = {"device", "torch", "threads", "blas", "core", "isa", "env"};
  if (parts.size() != 8 || parts[0] != kPrefix) {
    return InvalidArgument("not a canonical determinism class: '" + std::string(canonical) + "'");
  }
  std::string values[7];
  for (int i = 0; i < 7; ++i) {
    const std::string key = std::string(kKeys[i]) + "=";
    if (parts[i + 1].substr(0, key.size()) != key) {
      return InvalidArgument("determinism class lacks field '" + std::string(kKeys[i]) + "'");
    }
    values[i] = std::string(parts[i + 1].substr(key.size()));
  }
  DeterminismClass c;
  c.device = values[0];
  c.torch = values[1];
  TRIB_ASSIGN_OR_RETURN(c.threads, ParseThreads(values[2]));
  c.blas = values[3];
  c.blas_core = values[4];
  c.isa = values[5];
  c.env = values[6];
  if (c.Canonical() != canonical) return InvalidArgument("determinism class is not canonical");
  return c;
}

DeterminismClass LocalDeterminismClass(int threads, std::string_view device) {
  DeterminismClass c;
  c.device = "cpu";
  if (device.substr(0, 5) == "cuda:") {
    int index = 0;
    for (char ch : device.substr(5)) index = index * 10 + (ch >= '0' && ch <= '9' ? ch - '0' : 0);
    c.device = ProbeCudaDevice(index);
  }
  c.torch = TORCH_VERSION;
  c.threads = threads < 1 ? 1 : threads;
  ProbeBlas(c.blas, c.blas_core);
  c.isa = Isa();
  c.env = Env();
  return c;
}

}  // namespace tributary::verifier
