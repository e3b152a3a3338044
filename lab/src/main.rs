//! `agora-lab`: brings up a topology of real agorad nodes on hosts of their own, prints how to
//! drive each one with the `agora` CLI, and tears it all down on Enter or Ctrl-C. Without root
//! it runs in a user namespace of its own, where the kernel allows one.

use agora_lab::{Host, Lab, Nat, Node};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "agora-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    topology: Topology,
    /// Limits every node's link to this many Mbit/s each way.
    #[arg(long, global = true, value_name = "MBIT", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rate: Option<u32>,
}

#[derive(Subcommand)]
enum Topology {
    /// Hosts on one LAN, default configuration: they find each other by mDNS.
    Lan {
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=50))]
        hosts: u8,
    },
    /// A public node, and hosts each behind a NAT router of its own, bootstrapped from it.
    Nat {
        #[arg(long, value_enum, default_value_t = Kind::Cone)]
        kind: Kind,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=50))]
        hosts: u8,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// Endpoint-independent mapping: hole punching works.
    Cone,
    /// A random port per destination: only a relay connects two of them.
    Symmetric,
}

fn main() {
    let cli = Cli::parse();
    agora_lab::enter();
    let mut lab = Lab::new();
    let mut nodes: Vec<(Node, Host, String)> = Vec::new();
    match cli.topology {
        Topology::Lan { hosts } => {
            let mut lan = lab.network("lan", [10, 40, 0]);
            for i in 1..=hosts {
                let name = format!("h{i}");
                let host = lab.host(&name, &mut lan);
                shape(&lab, &host, cli.rate);
                let node = Node::start(&host, &name, &[], &[]);
                nodes.push((node, host, "on the LAN".into()));
            }
        }
        Topology::Nat { kind, hosts } => {
            let nat = match kind {
                Kind::Cone => Nat::Cone,
                Kind::Symmetric => Nat::Symmetric,
            };
            let topology = lab.behind_nats(nat, hosts);
            let public_host = topology.public;
            shape(&lab, &public_host, cli.rate);
            let declared = format!("/ip4/{}/tcp/4101", public_host.ip);
            let public = Node::start(
                &public_host,
                "public",
                &[],
                &["--external-address", &declared],
            );
            let peer = public.json(&["status"])["peer_id"]
                .as_str()
                .expect("peer_id")
                .to_string();
            let seed = format!("{declared}/p2p/{peer}");
            nodes.push((
                public,
                public_host,
                "public, the others' bootstrap and relay".into(),
            ));
            let behind = match kind {
                Kind::Cone => "behind a cone NAT",
                Kind::Symmetric => "behind a symmetric NAT",
            };
            for (i, host) in topology.hosts.into_iter().enumerate() {
                let name = format!("h{}", i + 1);
                shape(&lab, &host, cli.rate);
                let node = Node::start(&host, &name, &[], &["--bootstrap", &seed]);
                nodes.push((node, host, behind.into()));
            }
        }
    }
    println!("The lab is up. Drive a node with the agora CLI from any shell:");
    for (node, host, role) in &nodes {
        println!(
            "  {:<7} {:<15} {role}\n          AGORA_HOME={} agora status",
            node.name,
            host.ip,
            node.home.path().display()
        );
    }
    println!("Press Enter or Ctrl-C to stop the nodes and take the lab down.");
    wait_for_the_end();
    println!("Stopping {} nodes.", nodes.len());
    drop(nodes);
    drop(lab);
}

fn shape(lab: &Lab, host: &Host, rate: Option<u32>) {
    if let Some(mbit) = rate {
        lab.rate(host, mbit);
    }
}

/// Returns on Enter, end of input or Ctrl-C, so that the nodes are stopped and the
/// namespaces deleted either way.
fn wait_for_the_end() {
    use tokio::io::AsyncBufReadExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut line = String::new();
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = stdin.read_line(&mut line) => {}
        }
    });
    // tokio's stdin reader is a blocking thread that would hold the runtime's drop.
    rt.shutdown_background();
}
