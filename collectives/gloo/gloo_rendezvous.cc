#include "collectives/gloo/gloo_rendezvous.h"

#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

namespace tributary::collectives {

Result<std::shared_ptr<gloo::rendezvous::Context>> ConnectGloo(const GlooRendezvous& r) {
  if (r.world < 1 || r.rank >= r.world) {
    return InvalidArgument("gloo: rank " + std::to_string(r.rank) + " of world " + std::to_string(r.world));
  }
  if (r.store_dir.empty()) return InvalidArgument("gloo: no rendezvous directory");
  std::shared_ptr<gloo::rendezvous::Context> context;
  TRIB_RETURN_IF_ERROR(GlooCall("connect (rank " + std::to_string(r.rank) + ")", [&] {
    gloo::transport::tcp::attr attr;
    attr.hostname = r.host;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore files(r.store_dir);
    context = std::make_shared<gloo::rendezvous::Context>(static_cast<int>(r.rank), static_cast<int>(r.world));
    context->setTimeout(r.timeout);
    if (r.prefix.empty()) {
      context->connectFullMesh(files, device);
    } else {
      gloo::rendezvous::PrefixStore store(r.prefix, files);
      context->connectFullMesh(store, device);
    }
  }));
  return context;
}

}  // namespace tributary::collectives
