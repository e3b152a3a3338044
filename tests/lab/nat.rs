//! The lab's NAT routers and links behave as the real ones they stand for: what is asked for
//! from inside goes out from the router's address, what comes unasked from outside is dropped
//! (no reset), a cone NAT keeps a connection's source port and a symmetric one does not, and a
//! shaped link has its token bucket on both ends.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use agora_lab::{Lab, Nat, inside, qdiscs};

/// A listener in `host`'s namespace on `port`; each connection it accepts sends back the
/// address it came from.
fn echo_source(host: &agora_lab::Host, port: u16) -> SocketAddr {
    let listener = inside(host, move || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).unwrap()
    });
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let from = stream.peer_addr().unwrap().to_string();
            let _ = std::io::Write::write_all(&mut stream, from.as_bytes());
        }
    });
    SocketAddr::V4(SocketAddrV4::new(host.ip, port))
}

/// Connects from a fixed local port to each of `to`, and returns the source address each
/// server saw.
fn seen_from(host: &agora_lab::Host, local_port: u16, to: Vec<SocketAddr>) -> Vec<SocketAddr> {
    inside(host, move || {
        to.into_iter()
            .map(|addr| {
                use rustix::net::{AddressFamily, SocketType, bind, connect, socket, sockopt};
                // The same local port for every connection (the earlier ones are closed).
                let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
                sockopt::set_socket_reuseaddr(&fd, true).unwrap();
                bind(&fd, &SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local_port)).unwrap();
                connect(&fd, &addr).unwrap();
                let mut stream = TcpStream::from(fd);
                let mut seen = String::new();
                std::io::Read::read_to_string(&mut stream, &mut seen).unwrap();
                seen.parse().unwrap()
            })
            .collect()
    })
}

#[test]
fn nat_routers_map_what_goes_out_and_drop_what_comes_unasked() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    let mut internet = lab.network("inet", [198, 51, 100]);
    let (mut home, mut office) = (
        lab.network("home", [192, 168, 20]),
        lab.network("office", [192, 168, 21]),
    );
    let cone = lab.nat("cone", &mut internet, &mut home, Nat::Cone);
    let symmetric = lab.nat("sym", &mut internet, &mut office, Nat::Symmetric);
    let (a, b) = (lab.host("a", &mut home), lab.host("b", &mut office));
    let servers: Vec<_> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| lab.host(s, &mut internet))
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| echo_source(s, 7000)).collect();

    // Behind the cone NAT: every server sees the router's address and the host's own port.
    let seen = seen_from(&a, 40_001, addrs.clone());
    for s in &seen {
        assert_eq!(*s, SocketAddr::from((cone.ip, 40_001)), "{seen:?}");
    }
    // Behind the symmetric NAT: the router's address, and ports drawn at random (that all
    // three are the host's own would be a 1 in 28,000³ draw).
    let seen = seen_from(&b, 40_002, addrs.clone());
    assert!(seen.iter().all(|s| s.ip() == symmetric.ip), "{seen:?}");
    assert!(seen.iter().any(|s| s.port() != 40_002), "{seen:?}");

    // Unasked, from outside: the router's port 40001 has a mapping only towards the servers
    // it talked to, so a new connection is dropped: no reset, no answer at all.
    let probe = SocketAddr::from((cone.ip, 40_001));
    let err = inside(&servers[0], move || {
        TcpStream::connect_timeout(&probe, Duration::from_secs(1))
            .unwrap_err()
            .kind()
    });
    assert_eq!(err, ErrorKind::TimedOut);
    // The LAN itself is not reachable from the internet at all.
    let lan = SocketAddr::from((a.ip, 7000));
    let err = inside(&servers[0], move || {
        TcpStream::connect(lan).unwrap_err().kind()
    });
    assert_eq!(err, ErrorKind::NetworkUnreachable);

    lab.rate(&a, 40);
    let (host_side, switch_side) = qdiscs(&a);
    for q in [&host_side, &switch_side] {
        assert!(
            q.starts_with("qdisc tbf") && q.contains("rate 40Mbit"),
            "{q}"
        );
    }
}
