//! Test helper: produces batches of 4 MiB to partition 0 of a topic until killed (used to
//! kill a producer while the server reads from it). Usage: GROUP_FILE TOPIC.

use std::path::Path;

use diaspora_server::client::Client;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        diaspora_server::say!("usage: diaspora-test-producer GROUP_FILE TOPIC");
        std::process::exit(2);
    }
    let c = match Client::connect(Path::new(&args[1])) {
        Ok(c) => c,
        Err(e) => {
            diaspora_server::say!("diaspora-test-producer: {e}");
            std::process::exit(1);
        }
    };
    let topic = match c.open_topic(&args[2]) {
        Ok(t) => t,
        Err(e) => {
            diaspora_server::say!("diaspora-test-producer: {e}");
            std::process::exit(1);
        }
    };
    let events: Vec<(Vec<u8>, Vec<u8>)> = (0..4).map(|i| (vec![i], vec![i; 1 << 20])).collect();
    let producer = std::process::id() as u64;
    for seq in 0.. {
        match c.produce(&topic, &args[2], 0, producer, seq, &events) {
            Ok(_) => println!("stored {seq}"),
            Err(e) => {
                diaspora_server::say!("diaspora-test-producer: {e}");
                std::process::exit(1);
            }
        }
    }
}
