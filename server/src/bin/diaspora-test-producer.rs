//! Test helper: produces batches of 4 MiB to partition 0 of a topic until killed (used to
//! kill a producer while the server reads from it). Usage: GROUP_FILE TOPIC.
//!
//! With a third argument `poll`, it parks one long poll (a minute) on an empty partition 0
//! instead, prints `POLLING` once the poll was sent, and waits (used to kill a consumer while
//! the server holds its poll).

use std::path::Path;

use diaspora_server::client::Client;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let poll = args.get(3).is_some_and(|a| a == "poll");
    if args.len() != 3 && !(args.len() == 4 && poll) {
        diaspora_server::say!("usage: diaspora-test-producer GROUP_FILE TOPIC [poll]");
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
    if poll {
        return park_a_poll(&c, &topic, &args[2]);
    }
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

/// Parks a one-minute fetch from event 0 of partition 0 (empty) and waits for it; prints
/// `POLLING` once the poll has had time to reach the server.
fn park_a_poll(c: &Client, topic: &diaspora_proto::admin::TopicOpenResponse, name: &str) {
    use std::io::Write;
    std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_millis(300));
        println!("POLLING");
        let _ = std::io::stdout().flush();
    });
    let r = c.fetch(topic, name, 0, "", Some(0), 10, 60_000, 0);
    diaspora_server::say!(
        "diaspora-test-producer: the poll ended: {:?}",
        r.map(|(f, _)| f.count)
    );
}
