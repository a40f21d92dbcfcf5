// libFuzzer target for decode: it must never crash, and whatever it accepts must re-encode to
// exactly the same bytes. Run with `make fuzz` (needs clang).
#include "raft.hpp"

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (std::optional<raft::Message> message = raft::decode(bytes))
    if (raft::encode(*message) != bytes) std::abort();
  return 0;
}
