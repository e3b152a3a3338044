//! A flash crowd: six nodes install one archive at once from its publisher, every host on a
//! 20 Mbit/s link. Downloaders serve each other the chunks they have verified, so the
//! publisher uploads far fewer than six copies.

use crate::node_on;
use crate::noise::noise;
use crate::process::{Daemon, package, wait_until};
use agora_lab::Lab;

const CROWD: usize = 6;
const MBIT: u32 = 20;

#[test]
fn a_crowd_of_six_on_shaped_links_costs_its_publisher_under_two_and_a_half_copies() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    let mut net = lab.network("net", [10, 21, 0]);
    let hosts = lab.shaped_hosts("c", CROWD + 1, &mut net, MBIT);
    let publisher = node_on(&hosts[0], &["--no-mdns", "--http", "127.0.0.1:4180"]);
    let seed = format!(
        "/ip4/{}/tcp/4101/p2p/{}",
        hosts[0].ip,
        publisher.json(&["status"])["peer_id"].as_str().unwrap()
    );
    let crowd: Vec<Daemon> = hosts[1..]
        .iter()
        .map(|h| node_on(h, &["--no-mdns", "--bootstrap", &seed]))
        .collect();
    let logs = crate::LogsOnPanic(vec![("publisher", &publisher), ("first", &crowd[0])]);

    publisher.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(src.path(), "crowd-kit", "1.0.0", "", "for a crowd");
    let data = noise(16_000_000, 37);
    std::fs::write(src.path().join("templates/data.bin"), &data).unwrap();
    let published = publisher.json(&["publish", src.path().to_str().unwrap()]);
    let size = published["release"]["size"].as_u64().unwrap() as f64;
    for (i, node) in crowd.iter().enumerate() {
        wait_until(&format!("node {} knows the package", i + 1), || {
            let info = node.agora(&["info", "crowd-kit"]);
            match info.status.success() {
                true => Ok(()),
                false => Err(String::from_utf8_lossy(&info.stderr).into_owned()),
            }
        });
    }

    let served = || agora_lab::metric(&hosts[0], "agora_bytes_served_total");
    let before = served();
    let projects: Vec<_> = crowd.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    std::thread::scope(|s| {
        let installs: Vec<_> = crowd
            .iter()
            .zip(&projects)
            .map(|(node, project)| {
                s.spawn(move || {
                    node.json(&[
                        "install",
                        "crowd-kit",
                        "--dir",
                        project.path().to_str().unwrap(),
                    ])
                })
            })
            .collect();
        for install in installs {
            assert_eq!(install.join().unwrap()["installed"][0]["version"], "1.0.0");
        }
    });
    for project in &projects {
        let unpacked = project
            .path()
            .join(".agora/packages/crowd-kit/templates/data.bin");
        assert!(
            std::fs::read(unpacked).unwrap() == data,
            "the archive arrived whole"
        );
    }
    let uploaded = served() - before;
    assert!(
        uploaded < 2.5 * size,
        "the publisher uploaded {uploaded} bytes for a crowd of {CROWD}: {:.2} copies of the \
         {size}-byte archive",
        uploaded / size
    );
    drop(logs);
}
