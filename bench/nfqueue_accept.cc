// romulus-nfqueue-accept: the cost of holding a guest's replies in the kernel
// instead of in the output proxy, measured without the hold itself.
//
// bench/e2e's `unprotected-nfqueue` row sends every packet kvstore sends on
// loopback through netfilter's NFQUEUE (an iptables rule it adds and removes)
// to this program, which lets each one go at once: a batch verdict for every
// packet it has read. That is the floor of an output commit kept in the
// kernel's queue (a checkpoint's acknowledgement would turn into one batch
// verdict), against the proxy's two extra loopback hops per request (the
// `null` row). Linux's plug qdisc (sch_plug, Remus's way) would be the other
// kernel-side hold; kernels built without CONFIG_NET_SCH_PLUG lack it.
//
// Usage: romulus-nfqueue-accept --queue N. Binds queue N for IPv4 with
// metadata only (no packet bytes are copied), prints "nfqueue N bound" once
// ready, and runs until killed. Needs CAP_NET_ADMIN. Messages from the kernel
// are parsed with every length checked; one it cannot parse ends the program
// with one line.
#include <endian.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <vector>

namespace {

constexpr size_t kReceiveBytes = 1 << 16;

int fail(const char* what) {
  std::fprintf(stderr, "romulus-nfqueue-accept: %s: %s\n", what, std::strerror(errno));
  return 1;
}

// One nfnetlink_queue request for queue `queue`: a netlink header, the
// nfgenmsg, then one attribute of `type` holding `len` bytes of `payload`.
class Request {
 public:
  Request(uint16_t msg_type, uint16_t queue, uint32_t seq) {
    auto* nh = reinterpret_cast<nlmsghdr*>(buf_);
    nh->nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_QUEUE << 8) | msg_type);
    nh->nlmsg_flags = NLM_F_REQUEST;
    nh->nlmsg_seq = seq;
    auto* g = reinterpret_cast<nfgenmsg*>(buf_ + NLMSG_HDRLEN);
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = htobe16(queue);
    len_ = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
  }
  template <typename T>
  Request& attr(uint16_t type, const T& payload) {
    static_assert(NLA_HDRLEN + sizeof(T) + 64 <= sizeof(buf_));
    auto* a = reinterpret_cast<nlattr*>(buf_ + len_);
    a->nla_type = type;
    a->nla_len = static_cast<uint16_t>(NLA_HDRLEN + sizeof(T));
    std::memcpy(buf_ + len_ + NLA_HDRLEN, &payload, sizeof(T));
    len_ += NLA_ALIGN(a->nla_len);
    return *this;
  }
  bool send_on(int fd) {
    reinterpret_cast<nlmsghdr*>(buf_)->nlmsg_len = static_cast<uint32_t>(len_);
    return ::send(fd, buf_, len_, 0) == static_cast<ssize_t>(len_);
  }

 private:
  alignas(nlmsghdr) char buf_[128] = {};
  size_t len_ = 0;
};

// The packet id of one NFQNL_MSG_PACKET message's body, if it has one.
bool packet_id(const char* body, size_t len, uint32_t* id) {
  size_t off = NLMSG_ALIGN(sizeof(nfgenmsg));
  while (off + NLA_HDRLEN <= len) {
    nlattr a;
    std::memcpy(&a, body + off, sizeof(a));
    if (a.nla_len < NLA_HDRLEN || off + a.nla_len > len) return false;
    if ((a.nla_type & NLA_TYPE_MASK) == NFQA_PACKET_HDR &&
        a.nla_len >= NLA_HDRLEN + sizeof(nfqnl_msg_packet_hdr)) {
      nfqnl_msg_packet_hdr h;
      std::memcpy(&h, body + off + NLA_HDRLEN, sizeof(h));
      *id = be32toh(h.packet_id);
      return true;
    }
    off += NLA_ALIGN(a.nla_len);
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  uint16_t queue = 0;
  if (argc != 3 || std::string_view(argv[1]) != "--queue" ||
      std::from_chars(argv[2], argv[2] + std::strlen(argv[2]), queue).ec != std::errc{}) {
    std::fprintf(stderr, "usage: romulus-nfqueue-accept --queue N (0..65535)\n");
    return 2;
  }
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return fail("netlink socket");
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) return fail("bind");
  const int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one));

  uint32_t seq = 0;
  nfqnl_msg_config_cmd bind_cmd{};
  bind_cmd.command = NFQNL_CFG_CMD_BIND;
  bind_cmd.pf = htobe16(AF_INET);
  nfqnl_msg_config_params params{};
  params.copy_range = htobe32(0);
  params.copy_mode = NFQNL_COPY_META;
  if (!Request(NFQNL_MSG_CONFIG, queue, ++seq).attr(NFQA_CFG_CMD, bind_cmd).send_on(fd) ||
      !Request(NFQNL_MSG_CONFIG, queue, ++seq).attr(NFQA_CFG_PARAMS, params).send_on(fd)) {
    return fail("binding the queue (needs CAP_NET_ADMIN)");
  }
  std::printf("nfqueue %u bound\n", queue);
  std::fflush(stdout);

  std::vector<char> buf(kReceiveBytes);
  for (;;) {
    const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("recv");
    }
    bool any = false;
    uint32_t last = 0;
    size_t off = 0;
    while (off + NLMSG_HDRLEN <= static_cast<size_t>(n)) {
      nlmsghdr nh;
      std::memcpy(&nh, buf.data() + off, sizeof(nh));
      if (nh.nlmsg_len < NLMSG_HDRLEN || off + nh.nlmsg_len > static_cast<size_t>(n)) {
        std::fprintf(stderr, "romulus-nfqueue-accept: a truncated netlink message; stopping\n");
        return 1;
      }
      if (nh.nlmsg_type == NLMSG_ERROR && nh.nlmsg_len >= NLMSG_HDRLEN + sizeof(nlmsgerr)) {
        nlmsgerr e;
        std::memcpy(&e, buf.data() + off + NLMSG_HDRLEN, sizeof(e));
        if (e.error != 0) {
          errno = -e.error;
          return fail("the kernel refused a request");
        }
      } else if ((nh.nlmsg_type & 0xff) == NFQNL_MSG_PACKET) {
        uint32_t id = 0;
        if (packet_id(buf.data() + off + NLMSG_HDRLEN, nh.nlmsg_len - NLMSG_HDRLEN, &id)) {
          last = id;
          any = true;
        }
      }
      off += NLMSG_ALIGN(nh.nlmsg_len);
    }
    if (!any) continue;
    // Every packet up to `last` goes: the verdict an acknowledgement would send.
    nfqnl_msg_verdict_hdr verdict{};
    verdict.verdict = htobe32(NF_ACCEPT);
    verdict.id = htobe32(last);
    if (!Request(NFQNL_MSG_VERDICT_BATCH, queue, ++seq)
             .attr(NFQA_VERDICT_HDR, verdict)
             .send_on(fd)) {
      return fail("sending a verdict");
    }
  }
}
