// The libtorch features tch 0.24 does not expose, as a small C ABI for
// src/nn/torch_ext.rs: autocast for any device and dtype, and random
// generators owned by one model instead of libtorch's global one.
//
// Rules of this file:
// - every extern "C" function catches every C++ exception; a failure returns
//   an error code (or NULL) and leaves its message in a thread-local string
//   that `cnnrs_last_error` hands out;
// - tensors cross as tch passes them: a heap `at::Tensor*` that the Rust side
//   owns (tch::Tensor::from_ptr) and frees through tch;
// - generators cross as an opaque heap `at::Generator*` freed by
//   `cnnrs_generator_free`;
// - only the ATen headers that are needed are included; <torch/torch.h> and
//   <ATen/ATen.h> would add tens of seconds to every build.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randperm.h>
#include <ATen/ops/zeros.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <exception>
#include <mutex>
#include <string>

// The autocast API of <ATen/autocast_mode.h>, declared here because that
// header includes <ATen/ATen.h>, <ATen/NativeFunctions.h> and
// <torch/library.h> (most of the compile time of this file). The
// declarations are copied verbatim from the libtorch 2.11 header; compiling
// this file with -DCNNRS_CHECK_AUTOCAST_DECLS includes the real header too,
// so a changed signature becomes a compile error.
#ifdef CNNRS_CHECK_AUTOCAST_DECLS
#include <ATen/autocast_mode.h>
#endif
namespace at::autocast {
TORCH_API bool is_autocast_enabled(at::DeviceType device_type);
TORCH_API void set_autocast_enabled(at::DeviceType device_type, bool enabled);
TORCH_API at::ScalarType get_autocast_dtype(at::DeviceType device_type);
TORCH_API void set_autocast_dtype(at::DeviceType device_type, at::ScalarType dtype);
TORCH_API void clear_cache();
TORCH_API int increment_nesting();
TORCH_API int decrement_nesting();
TORCH_API bool is_autocast_cache_enabled();
TORCH_API void set_autocast_cache_enabled(bool enabled);
} // namespace at::autocast

// The Rust side passes c10::DeviceType and c10::ScalarType as their integer
// values (tch's Kind uses the same numbering); these pin the ones it names.
static_assert(static_cast<int>(c10::DeviceType::CPU) == 0);
static_assert(static_cast<int>(c10::DeviceType::CUDA) == 1);
static_assert(static_cast<int>(at::kByte) == 0);
static_assert(static_cast<int>(at::kLong) == 4);
static_assert(static_cast<int>(at::kHalf) == 5);
static_assert(static_cast<int>(at::kFloat) == 6);
static_assert(static_cast<int>(at::kDouble) == 7);
static_assert(static_cast<int>(at::kBFloat16) == 15);

namespace {

thread_local std::string last_error;

void set_error(const char* msg) noexcept {
  try {
    last_error = msg;
  } catch (...) {
    // Out of memory while storing the message: keep whatever was there.
  }
}

// Runs `f`, turning any exception into an error code and a stored message.
template <class F>
int guarded(F&& f) noexcept {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    set_error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown C++ exception");
  }
  return 1;
}

c10::DeviceType device_type_of(int32_t code) {
  const auto t = static_cast<c10::DeviceType>(code);
  TORCH_CHECK(t == c10::DeviceType::CPU || t == c10::DeviceType::CUDA,
              "device type ", code, " is not supported (CPU or CUDA)");
  return t;
}

at::ScalarType low_precision_of(int32_t code) {
  const auto s = static_cast<at::ScalarType>(code);
  TORCH_CHECK(s == at::kBFloat16 || s == at::kHalf,
              "autocast dtype must be bfloat16 or float16, got scalar type ", code);
  return s;
}

at::IntArrayRef shape_of(const int64_t* shape, size_t ndim) {
  TORCH_CHECK(ndim == 0 || shape != nullptr, "null shape");
  return at::IntArrayRef(shape, ndim);
}

at::TensorOptions options_on(const at::Generator& gen, at::ScalarType dtype) {
  return at::TensorOptions().dtype(dtype).device(gen.device());
}

at::Generator& checked(at::Generator* gen) {
  TORCH_CHECK(gen != nullptr && gen->defined(), "null generator");
  return *gen;
}

} // namespace

extern "C" {

// The message of the last failure on this thread. Valid until the next call
// into this file on the same thread; the caller copies it at once.
const char* cnnrs_last_error() noexcept {
  return last_error.c_str();
}

// ---------------------------------------------------------------- autocast

// What `cnnrs_autocast_enter` saw before it changed anything, for
// `cnnrs_autocast_exit` to restore. Mirrored by a #[repr(C)] struct in Rust.
struct CnnrsAutocastPrev {
  int32_t device_type;
  int32_t enabled;
  int32_t dtype;
  int32_t cache_enabled;
};

// torch.autocast.__enter__: remember the state, enable autocast for the
// device with `dtype` (or, with `enabled` 0, disable it, as
// torch.autocast(enabled=False) does; `dtype` is then ignored), count one
// more nesting level.
int cnnrs_autocast_enter(int32_t device_type, int32_t dtype, int32_t enabled,
                         CnnrsAutocastPrev* prev) noexcept {
  return guarded([&] {
    TORCH_CHECK(prev != nullptr, "null autocast state");
    const auto dev = device_type_of(device_type);
    prev->device_type = device_type;
    prev->enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    prev->dtype = static_cast<int32_t>(at::autocast::get_autocast_dtype(dev));
    prev->cache_enabled = at::autocast::is_autocast_cache_enabled() ? 1 : 0;
    if (enabled != 0) {
      const auto fast = low_precision_of(dtype);
      at::autocast::set_autocast_enabled(dev, true);
      at::autocast::set_autocast_dtype(dev, fast);
    } else {
      at::autocast::set_autocast_enabled(dev, false);
    }
    at::autocast::increment_nesting();
    // torch.autocast(cache_enabled=None) sets the cache flag to its current
    // value: nothing to change, but it is restored on exit as torch does.
  });
}

// torch.autocast.__exit__: drop the weight-cast cache when leaving the
// outermost autocast region, then restore what `enter` saw.
int cnnrs_autocast_exit(const CnnrsAutocastPrev* prev) noexcept {
  return guarded([&] {
    TORCH_CHECK(prev != nullptr, "null autocast state");
    const auto dev = device_type_of(prev->device_type);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dev, prev->enabled != 0);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(prev->dtype));
    at::autocast::set_autocast_cache_enabled(prev->cache_enabled != 0);
  });
}

// Whether autocast is on for the device on this thread, and its dtype.
int cnnrs_autocast_query(int32_t device_type, int32_t* enabled, int32_t* dtype) noexcept {
  return guarded([&] {
    TORCH_CHECK(enabled != nullptr && dtype != nullptr, "null output");
    const auto dev = device_type_of(device_type);
    *enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    *dtype = static_cast<int32_t>(at::autocast::get_autocast_dtype(dev));
  });
}

// -------------------------------------------------------------- generators

// A new generator for the device, seeded with `seed`; NULL on failure.
at::Generator* cnnrs_generator_new(int32_t device_type, int32_t device_index,
                                   uint64_t seed) noexcept {
  at::Generator* out = nullptr;
  guarded([&] {
    const auto dev = device_type_of(device_type);
    at::Generator gen;
    if (dev == c10::DeviceType::CPU) {
      gen = at::detail::createCPUGenerator(seed);
    } else {
      const auto& hooks = at::detail::getCUDAHooks();
      TORCH_CHECK(hooks.hasCUDA(),
                  "a CUDA generator was asked for, but libtorch has no usable CUDA "
                  "(no CUDA build loaded, no driver or no device)");
      const int count = hooks.getNumGPUs();
      TORCH_CHECK(device_index >= 0 && device_index < count, "CUDA device index ",
                  device_index, " out of range, libtorch sees ", count, " device(s)");
      gen = hooks.getNewGenerator(static_cast<c10::DeviceIndex>(device_index));
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_current_seed(seed);
    }
    out = new at::Generator(std::move(gen));
  });
  return out;
}

void cnnrs_generator_free(at::Generator* gen) noexcept {
  delete gen;
}

// The generator's state as a uint8 CPU tensor (torch.Generator.get_state).
int cnnrs_generator_get_state(at::Generator* gen, at::Tensor** out) noexcept {
  return guarded([&] {
    auto& g = checked(gen);
    std::lock_guard<std::mutex> lock(g.mutex());
    *out = new at::Tensor(g.get_state());
  });
}

// Restores a state from `cnnrs_generator_get_state` (torch.Generator.set_state).
int cnnrs_generator_set_state(at::Generator* gen, const at::Tensor* state) noexcept {
  return guarded([&] {
    auto& g = checked(gen);
    TORCH_CHECK(state != nullptr, "null state tensor");
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_state(*state);
  });
}

// A random permutation of 0..n-1, int64 on the generator's device.
int cnnrs_generator_randperm(at::Generator* gen, int64_t n, at::Tensor** out) noexcept {
  return guarded([&] {
    auto& g = checked(gen);
    *out = new at::Tensor(at::randperm(n, g, options_on(g, at::kLong)));
  });
}

// Uniform [0, 1) samples of a floating dtype.
int cnnrs_generator_rand(at::Generator* gen, const int64_t* shape, size_t ndim, int32_t dtype,
                         at::Tensor** out) noexcept {
  return guarded([&] {
    auto& g = checked(gen);
    const auto s = static_cast<at::ScalarType>(dtype);
    *out = new at::Tensor(at::rand(shape_of(shape, ndim), g, options_on(g, s)));
  });
}

// Integers uniform in [low, high), int64.
int cnnrs_generator_randint(at::Generator* gen, int64_t low, int64_t high, const int64_t* shape,
                            size_t ndim, at::Tensor** out) noexcept {
  return guarded([&] {
    auto& g = checked(gen);
    *out = new at::Tensor(
        at::randint(low, high, shape_of(shape, ndim), g, options_on(g, at::kLong)));
  });
}

// float32 zeros and ones, each one with probability p.
int cnnrs_generator_bernoulli(at::Generator* gen, double p, const int64_t* shape, size_t ndim,
                              at::Tensor** out) noexcept {
  return guarded([&] {
    auto& g = checked(gen);
    auto t = at::empty(shape_of(shape, ndim), options_on(g, at::kFloat));
    t.bernoulli_(p, g);
    *out = new at::Tensor(std::move(t));
  });
}

// Training-mode dropout drawing its mask from `gen`, as ATen's _dropout_impl
// computes it: noise ~ Bernoulli(1 - p), scaled by 1 / (1 - p), times x. The
// product is recorded by autograd, so d out / d x = noise. p == 1 gives
// x * 0, as torch does. The caller has checked 0 <= p <= 1.
int cnnrs_generator_dropout(at::Generator* gen, const at::Tensor* x, double p,
                            at::Tensor** out) noexcept {
  return guarded([&] {
    auto& g = checked(gen);
    TORCH_CHECK(x != nullptr && x->defined(), "null or undefined input tensor");
    TORCH_CHECK(x->device().type() == g.device().type(), "dropout input is on ",
                x->device(), " but the generator on ", g.device());
    TORCH_CHECK(at::isFloatingType(x->scalar_type()),
                "dropout needs a floating-point tensor, got ", x->scalar_type());
    if (p == 1.0) {
      *out = new at::Tensor(at::mul(*x, at::zeros({}, x->options())));
      return;
    }
    // The input's own memory format: a contiguous mask on a channels-last
    // activation would make the product, and its gradient, contiguous, and
    // every op before it (batch norm, ReLU) run on mixed layouts.
    auto noise = at::empty_like(*x, at::MemoryFormat::Preserve);
    noise.bernoulli_(1.0 - p, g);
    noise.div_(1.0 - p);
    *out = new at::Tensor(at::mul(*x, noise));
  });
}

// ------------------------------------------------------------- device facts

// 1 when the current CUDA device computes bfloat16 natively (compute
// capability 8.0 or later, as torch.cuda.is_bf16_supported() decides), else 0.
int cnnrs_cuda_supports_bf16() noexcept {
  try {
    const auto& hooks = at::detail::getCUDAHooks();
    return hooks.hasCUDA() && hooks.supportsBFloat16ConvolutionWithCuDNNv8() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// 1 when oneDNN computes bfloat16 natively on this CPU (AVX-512 BF16 or AMX),
// else 0: libtorch's own answer (torch.ops.mkldnn._is_mkldnn_bf16_supported),
// which honours ONEDNN_MAX_CPU_ISA. A CPU whose oneDNN is capped at AVX2 would
// emulate bfloat16, slower than float32, so "auto" must not pick it there.
int cnnrs_cpu_supports_bf16() noexcept {
  try {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("mkldnn::_is_mkldnn_bf16_supported", "")
            .typed<bool()>();
    return op.call() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// beta * input + alpha * (m1 @ m2) in one kernel, as torch.addmm(input, m1, m2,
// beta=beta, alpha=alpha) (tch's addmm has no beta/alpha): Muon's
// Newton–Schulz iteration, rounded as torch.optim.Muon's is.
int cnnrs_addmm(const at::Tensor* input, const at::Tensor* m1, const at::Tensor* m2, double beta,
                double alpha, at::Tensor** out) noexcept {
  return guarded([&] {
    TORCH_CHECK(input != nullptr && m1 != nullptr && m2 != nullptr, "null tensor");
    *out = new at::Tensor(input->addmm(*m1, *m2, beta, alpha));
  });
}

// self += alpha * other in place, as torch's self.add_(other, alpha=alpha).
int cnnrs_add_scaled_(at::Tensor* self, const at::Tensor* other, double alpha) noexcept {
  return guarded([&] {
    TORCH_CHECK(self != nullptr && other != nullptr, "null tensor");
    self->add_(*other, alpha);
  });
}

} // extern "C"
