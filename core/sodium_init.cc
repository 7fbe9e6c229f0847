#include "core/sodium_init.h"

#include <sodium.h>

#include <stdexcept>

namespace tributary {

void EnsureSodiumInitialised() {
  static const int init = sodium_init();  // thread-safe static init; -1 means unusable
  if (init < 0) throw std::runtime_error("libsodium failed to initialise");
}

}  // namespace tributary
