// libsodium must be initialised once per process before its key, signature, AEAD and random
// functions are used (it picks its implementations and seeds its generator there).
#pragma once

namespace tributary {

// Idempotent and thread-safe; throws std::runtime_error if libsodium cannot be used at all
// (no entropy source), which no caller could recover from.
void EnsureSodiumInitialised();

}  // namespace tributary
