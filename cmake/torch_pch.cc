// Anchor translation unit for the shared <torch/torch.h> precompiled header.
#include <torch/torch.h>
namespace tributary::detail {
int TorchPchAnchor() { return 0; }
}  // namespace tributary::detail
