//! The network lab: Linux network namespaces that give each node its own address and stack on
//! one machine. A [`Lab`] builds a topology out of
//! - networks ([`Lab::network`]): a bridge in a namespace of its own, a LAN or "the internet";
//! - hosts ([`Lab::host`]): a namespace with one interface on a network, where an `agorad`
//!   runs (the Unix socket is a file, so the `agora` CLI drives it from outside);
//! - NAT routers ([`Lab::nat`]): a namespace between a LAN and a wider network that
//!   masquerades what leaves, keeps the port of each mapping where it can ([`Nat::Cone`]) or
//!   draws a random one per destination ([`Nat::Symmetric`], `fully-random`), and drops what
//!   comes unasked from outside (a stateful firewall, as home routers have: a reset instead
//!   would break TCP simultaneous open);
//! - link rates ([`Lab::rate`]): `tc` token buckets on both directions of a host's link.
//!
//! Everything is torn down when the lab is dropped, and namespaces a killed run left behind
//! (their process gone) are removed by the next lab. It needs iproute2 and nftables, and root
//! (CAP_NET_ADMIN and the right to mount /run/netns) or a user namespace where it is root
//! (`crate::userns`): [`Lab::new`] panics saying which is missing, never skips.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Every namespace a lab makes starts with this, then the pid of the test process.
const PREFIX: &str = "agoralab";

/// How a NAT router maps a LAN host's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Endpoint-independent mapping (masquerade keeps the source port when it is free): what
    /// hole punching needs.
    Cone,
    /// A random source port per connection (`masquerade fully-random`): no hole can be
    /// punched, only a relay helps.
    Symmetric,
}

/// A bridge in a namespace of its own, with a /24 of addresses.
pub struct Network {
    ns: String,
    /// The first three octets of its /24.
    subnet: [u8; 3],
    next_host: u8,
    next_port: u32,
    /// The router that leads out of it, if any (the default route of its hosts).
    gateway: Option<Ipv4Addr>,
}

impl Network {
    fn address(&mut self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        let ip = Ipv4Addr::new(a, b, c, self.next_host);
        self.next_host += 1;
        ip
    }

    /// Plugs `ns` into this network with an interface named `ifname` there; returns the
    /// switch side's interface name.
    fn plug(&mut self, ns: &str, ifname: &str) -> String {
        self.next_port += 1;
        let port = format!("p{}", self.next_port);
        ip(&[
            "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", &port, "netns",
            &self.ns,
        ]);
        ip(&["-n", &self.ns, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", ns, "link", "set", ifname, "up"]);
        port
    }
}

/// A host (or a router): a namespace with an interface on a network.
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
    /// Its interface on that network.
    dev: String,
    /// The switch side of its link, namespace and interface (where the rate towards the host
    /// is set).
    port: (String, String),
}

/// What [`Lab::behind_nats`] built.
pub struct BehindNats {
    /// A host on the internet, with a public address.
    pub public: Host,
    /// A host behind each NAT router, in order.
    pub hosts: Vec<Host>,
}

/// A topology of namespaces, torn down on drop.
pub struct Lab {
    id: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// An empty lab. Panics, saying why, where the lab cannot be built: not root here (see
    /// [`crate::enter`] and [`Lab::for_test`] for a user namespace), or a tool missing.
    #[expect(
        clippy::new_without_default,
        reason = "a lab changes the machine it runs on; nothing should make one by default"
    )]
    pub fn new() -> Self {
        static LABS: AtomicU32 = AtomicU32::new(0);
        if !rustix::process::geteuid().is_root() {
            panic!(
                "the network lab needs root (it makes network namespaces, veth links and NAT \
                 rules), or a user namespace of its own where it is root: {}",
                match crate::userns::available() {
                    Ok(()) => "this kernel allows one; start the lab with agora_lab::enter() \
                               or Lab::for_test"
                        .to_string(),
                    Err(why) => format!("none can be made here ({why}); run it as root"),
                }
            );
        }
        crate::userns::prepare();
        for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")] {
            let found = Command::new(tool).arg("-V").output().is_ok();
            assert!(
                found,
                "the network lab needs `{tool}` (Debian package {package}); `bash .ci/test` \
                 installs it"
            );
        }
        remove_stale();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        Self {
            id: format!("{PREFIX}-{}-{n}", std::process::id()),
            namespaces: Vec::new(),
        }
    }

    /// For the test `name` (`agora_lab::test_name!()`): a lab where this process can build
    /// one. Where it cannot as it is, but can in a user namespace of its own, the test runs
    /// again in one, this returns `None` once it passed there, and panics with its output if
    /// it did not.
    pub fn for_test(name: &str) -> Option<Self> {
        if rustix::process::geteuid().is_root() {
            return Some(Self::new());
        }
        crate::userns::rerun_test(name);
        None
    }

    fn namespace(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.id);
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A network with the addresses `a.b.c.0/24` (hosts get .2 and up; .1 is its router's).
    pub fn network(&mut self, name: &str, subnet: [u8; 3]) -> Network {
        let ns = self.namespace(&format!("net-{name}"));
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"]);
        // Without snooping a bridge floods multicast (mDNS) to every port, as a plain switch.
        ip(&[
            "-n",
            &ns,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &ns, "link", "set", "br0", "up"]);
        Network {
            ns,
            subnet,
            next_host: 2,
            next_port: 0,
            gateway: None,
        }
    }

    /// A host on `network`, routed through its router if it has one.
    pub fn host(&mut self, name: &str, network: &mut Network) -> Host {
        let ns = self.namespace(name);
        let port = network.plug(&ns, "eth0");
        let ip = network.address();
        ip_cmd(&ns, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        if let Some(gw) = network.gateway {
            ip_cmd(&ns, &["route", "add", "default", "via", &gw.to_string()]);
        }
        Host {
            ns,
            ip,
            dev: "eth0".into(),
            port: (network.ns.clone(), port),
        }
    }

    /// A NAT router between `lan` (where it takes .1 and becomes the hosts' default route)
    /// and `wan` (where it takes the next address). Create it before the LAN's hosts.
    pub fn nat(&mut self, name: &str, wan: &mut Network, lan: &mut Network, kind: Nat) -> Host {
        let ns = self.namespace(name);
        let wan_port = wan.plug(&ns, "wan");
        lan.plug(&ns, "lan");
        let wan_ip = wan.address();
        let [a, b, c] = lan.subnet;
        let lan_ip = Ipv4Addr::new(a, b, c, 1);
        ip_cmd(&ns, &["addr", "add", &format!("{wan_ip}/24"), "dev", "wan"]);
        ip_cmd(&ns, &["addr", "add", &format!("{lan_ip}/24"), "dev", "lan"]);
        if let Some(gw) = wan.gateway {
            ip_cmd(&ns, &["route", "add", "default", "via", &gw.to_string()]);
        }
        run(Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ]));
        let random = match kind {
            Nat::Cone => "",
            Nat::Symmetric => " fully-random",
        };
        let rules = format!(
            "table ip nat {{
                chain postrouting {{
                    type nat hook postrouting priority srcnat; policy accept;
                    oifname \"wan\" masquerade{random}
                }}
            }}
            table inet firewall {{
                chain forward {{
                    type filter hook forward priority filter; policy drop;
                    ct state established,related accept
                    iifname \"lan\" oifname \"wan\" accept
                }}
                chain input {{
                    type filter hook input priority filter; policy drop;
                    ct state established,related accept
                    iifname {{ \"lo\", \"lan\" }} accept
                }}
            }}"
        );
        let mut nft = Command::new("ip");
        nft.args(["netns", "exec", &ns, "nft", "-f", "-"]);
        run_with_input(nft, &rules);
        lan.gateway = Some(lan_ip);
        Host {
            ns,
            ip: wan_ip,
            dev: "wan".into(),
            port: (wan.ns.clone(), wan_port),
        }
    }

    /// The topology of developers behind home routers: "the internet" (198.51.100.0/24), `n`
    /// LANs (192.168.30.0/24 and up), each behind a NAT router of `kind` of its own (r1 at
    /// .2 on the internet, r2 at .3, ...), a public host on the internet, and a host on each
    /// LAN (h1, h2, ...).
    pub fn behind_nats(&mut self, kind: Nat, n: u8) -> BehindNats {
        let mut internet = self.network("inet", [198, 51, 100]);
        let mut lans: Vec<Network> = (1..=n)
            .map(|i| {
                let mut lan = self.network(&format!("lan{i}"), [192, 168, 29 + i]);
                self.nat(&format!("r{i}"), &mut internet, &mut lan, kind);
                lan
            })
            .collect();
        let public = self.host("public", &mut internet);
        let hosts = lans
            .iter_mut()
            .enumerate()
            .map(|(i, lan)| self.host(&format!("h{}", i + 1), lan))
            .collect();
        BehindNats { public, hosts }
    }

    /// `count` hosts on `network`, `prefix`1 to `prefix``count`, each on a link of `mbit`
    /// Mbit/s.
    pub fn shaped_hosts(
        &mut self,
        prefix: &str,
        count: usize,
        network: &mut Network,
        mbit: u32,
    ) -> Vec<Host> {
        (1..=count)
            .map(|i| {
                let host = self.host(&format!("{prefix}{i}"), network);
                self.rate(&host, mbit);
                host
            })
            .collect()
    }

    /// Limits `host`'s link to `mbit` Mbit/s each way (a token bucket on both ends).
    pub fn rate(&self, host: &Host, mbit: u32) {
        let rate = format!("{mbit}mbit");
        // A bucket of 1/100 s of the rate (at least 16 KiB) and a queue of 1/20 s: a link,
        // not a shaper that lets bursts of a megabyte through.
        let burst = (mbit as u64 * 1_000_000 / 8 / 100)
            .max(16 * 1024)
            .to_string();
        let latency = "50ms";
        for (ns, dev) in [(&host.ns, &host.dev), (&host.port.0, &host.port.1)] {
            run(Command::new("ip").args([
                "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate",
                &rate, "burst", &burst, "latency", latency,
            ]));
        }
    }
}

/// Runs `f` on a thread inside `host`'s network namespace (sockets it opens are the host's),
/// and returns what it returns.
pub fn inside<T: Send + 'static>(host: &Host, f: impl FnOnce() -> T + Send + 'static) -> T {
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    use std::os::fd::AsFd;
    let path = format!("/run/netns/{}", host.ns);
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("the thread in the namespace panicked")
}

/// The qdiscs of `host`'s side of its link and of the switch's, as `tc qdisc show` prints them.
pub fn qdiscs(host: &Host) -> (String, String) {
    let show = |ns: &str, dev: &str| {
        let out = Command::new("tc")
            .args(["-n", ns, "qdisc", "show", "dev", dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    (show(&host.ns, &host.dev), show(&host.port.0, &host.port.1))
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Removes the namespaces of labs whose test process is gone (a run that was killed).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        let alive = std::path::Path::new("/proc").join(pid).exists();
        if !alive {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// `ip -n NS ARGS`.
fn ip_cmd(ns: &str, args: &[&str]) {
    run(Command::new("ip").arg("-n").arg(ns).args(args));
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn run_with_input(mut cmd: Command, input: &str) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
