use diaspora_api::{json, select_all, ConsumerOptions, Driver};

#[test]
fn produce_then_consume_roundtrip() {
    diaspora_driver_files::register();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Driver::new("files", json!({"root_path": dir.path()})).expect("driver");
    d.create_topic("t", json!({"num_partitions": 2}))
        .expect("create");
    let t = d.open_topic("t").expect("open");
    let p = t.producer().expect("producer");
    let mut futs = Vec::new();
    for i in 0..1000u32 {
        futs.push(p.push(json!({"i": i}), i.to_le_bytes().to_vec()));
    }
    p.flush().get().expect("flush");
    for (i, f) in futs.into_iter().enumerate() {
        assert_eq!(f.get().expect("id"), (i / 2) as u64);
    }
    t.mark_as_complete().expect("complete");
    let c = t
        .consumer_with(
            "c",
            ConsumerOptions {
                data_selector: Some(select_all()),
                ..Default::default()
            },
        )
        .expect("consumer");
    let mut n = 0;
    loop {
        let e = c.pull().wait(1000).expect("pull").expect("no timeout");
        if e.is_no_more_events() {
            break;
        }
        let i = e.metadata().json().expect("json")["i"].as_u64().expect("i") as u32;
        assert_eq!(e.data().to_vec(), i.to_le_bytes());
        assert_eq!(e.partition() as u32, i % 2);
        assert_eq!(e.id() as u32, i / 2);
        n += 1;
    }
    assert_eq!(n, 1000);
}
