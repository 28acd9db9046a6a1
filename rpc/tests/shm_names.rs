//! A process killed with SIGKILL leaves its libfabric shm endpoint names in /dev/shm; a later
//! process with the same pid must still be able to open shm endpoints.

use diaspora_rpc::FabricNet;

#[test]
fn a_leftover_shm_name_of_a_dead_process_with_our_pid_does_not_block_the_endpoint() {
    if !std::path::Path::new("/dev/shm").is_dir() {
        eprintln!("SKIP: no /dev/shm");
        return;
    }
    // What a killed earlier owner of this pid leaves behind: the names its endpoints had.
    let pid = std::process::id();
    let leftovers: Vec<_> = (0..4)
        .flat_map(|a| (0..4).map(move |b| format!("/dev/shm/{pid}:{a}:{b}")))
        .collect();
    for name in &leftovers {
        std::fs::write(name, b"stale").expect("create a stale shm name");
    }
    let opened = FabricNet::open("shm", None, None);
    for name in &leftovers {
        let _ = std::fs::remove_file(name);
    }
    let net = opened.expect("shm endpoint opens despite stale names of our pid");
    // A second endpoint of the same process still opens (its own live names are untouched).
    let second = FabricNet::open("shm", None, None).expect("second shm endpoint");
    drop(second);
    drop(net);
}
