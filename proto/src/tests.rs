//! Property tests over every body: arbitrary bytes never panic, encoded values round-trip.

use proptest::prelude::*;

use crate::admin::Empty;
use crate::*;

fn region() -> impl Strategy<Value = RemoteRegion> {
    (0u64..1 << 40, 0u64..1 << 20, any::<u64>())
        .prop_filter_map("overflow", |(a, l, k)| RemoteRegion::new(a, l, k))
}

fn name_s() -> impl Strategy<Value = String> {
    "[a-z0-9_.-]{1,40}"
}

fn table() -> impl Strategy<Value = BatchTable> {
    proptest::collection::vec(
        (
            proptest::collection::vec(any::<u8>(), 0..30),
            0u32..1000,
            any::<u32>(),
        ),
        1..40,
    )
    .prop_map(|ev| {
        let mut t = BatchTable::default();
        for (m, l, c) in ev {
            t.push(&m, l, c);
        }
        t
    })
}

fn produce() -> impl Strategy<Value = ProduceBatch> {
    (
        name_s(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        table(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(topic, partition, producer_id, seq, t, inline, key)| {
            let mut bytes = Vec::new();
            t.encode_into(&mut bytes);
            let region_len = t.data_len() + if inline { 0 } else { bytes.len() as u64 };
            let regions = if region_len == 0 {
                vec![]
            } else {
                vec![RemoteRegion::new(4096, region_len, key).unwrap()]
            };
            ProduceBatch {
                topic,
                partition,
                producer_id,
                seq,
                count: t.len() as u32,
                meta_len: t.meta.len() as u64,
                data_len: t.data_len(),
                table: inline.then_some(bytes),
                regions,
            }
        })
}

fn fetch() -> impl Strategy<Value = Fetch> {
    (
        name_s(),
        any::<u32>(),
        name_s(),
        any::<u64>(),
        1u32..1000,
        any::<u64>(),
        0u32..MAX_WAIT,
        0u16..4,
        proptest::collection::vec(region(), 1..4),
    )
        .prop_map(
            |(
                topic,
                partition,
                consumer,
                from_id,
                max_events,
                max_bytes,
                wait_ms,
                flags,
                landing,
            )| {
                Fetch {
                    topic,
                    partition,
                    consumer,
                    from_id,
                    max_events,
                    max_bytes,
                    wait_ms,
                    flags,
                    landing,
                }
            },
        )
}

const MAX_WAIT: u32 = fetch::MAX_WAIT_MS;

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: &M) {
    let l = Limits::default();
    let body = m.to_vec();
    assert_eq!(&M::decode(&body, &l).unwrap(), m);
    // As a response, too.
    assert_eq!(
        &decode_response::<M>(&encode_ok(m), &l).unwrap().unwrap(),
        m
    );
    // Any strict prefix is an error, never a panic.
    for cut in 0..body.len() {
        let _ = M::decode(&body[..cut], &l);
    }
}

fn never_panics(bytes: &[u8]) {
    let l = Limits::default();
    let _ = Hello::decode(bytes, &l);
    let _ = HelloResponse::decode(bytes, &l);
    let _ = TopicCreate::decode(bytes, &l);
    let _ = TopicOpen::decode(bytes, &l);
    let _ = TopicOpenResponse::decode(bytes, &l);
    let _ = TopicExists::decode(bytes, &l);
    let _ = TopicExistsResponse::decode(bytes, &l);
    let _ = TopicList::decode(bytes, &l);
    let _ = TopicListResponse::decode(bytes, &l);
    let _ = TopicComplete::decode(bytes, &l);
    let _ = Empty::decode(bytes, &l);
    let _ = ProduceBatch::decode(bytes, &l);
    let _ = ProduceResponse::decode(bytes, &l);
    let _ = Fetch::decode(bytes, &l);
    let _ = FetchResponse::decode(bytes, &l);
    let _ = FetchData::decode(bytes, &l);
    let _ = FetchDataResponse::decode(bytes, &l);
    let _ = Commit::decode(bytes, &l);
    let _ = CommitResponse::decode(bytes, &l);
    let _ = Subscribe::decode(bytes, &l);
    let _ = decode_response::<ProduceResponse>(bytes, &l);
    let _ = decode_response::<FetchResponse>(bytes, &l);
    if let Ok(s) = std::str::from_utf8(bytes) {
        let _ = GroupFile::parse(s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        never_panics(&bytes);
    }

    #[test]
    fn mutated_valid_bodies_never_panic(p in produce(), f in fetch(), at in any::<usize>(), v in any::<u8>()) {
        for mut body in [p.to_vec(), f.to_vec()] {
            let i = at % body.len();
            body[i] = v;
            never_panics(&body);
        }
    }

    #[test]
    fn produce_batches_round_trip(p in produce()) {
        round_trip(&p);
        if let Some(t) = &p.table {
            let r = BatchTableRef::parse(t, p.count as usize).unwrap();
            prop_assert_eq!(r.total_data_len(), p.data_len);
        }
    }

    #[test]
    fn fetches_round_trip(f in fetch()) {
        round_trip(&f);
    }

    #[test]
    fn fetch_responses_round_trip(t in table(), first_id in any::<u64>(), eos in any::<bool>(), inline in any::<bool>()) {
        let mut bytes = Vec::new();
        t.encode_into(&mut bytes);
        let mut flags = if eos { fetch::END_OF_STREAM } else { 0 };
        if !inline {
            flags |= fetch::TABLE_IN_LANDING | fetch::DATA_IN_LANDING;
        }
        round_trip(&FetchResponse {
            first_id,
            count: t.len() as u32,
            flags,
            meta_len: t.meta.len() as u64,
            data_len: t.data_len(),
            table: inline.then_some(bytes),
        });
    }

    #[test]
    fn small_bodies_round_trip(n in name_s(), c in name_s(), x in any::<u64>(), y in any::<u32>(),
                               b in any::<bool>(), regions in proptest::collection::vec(region(), 1..5)) {
        round_trip(&Hello { version: y as u16, client_id: x, token: c.clone() });
        round_trip(&HelloResponse { version: 1, epoch: x, rank: y, thread: y / 2, limits: Limits::default() });
        round_trip(&TopicCreate { name: n.clone(), options: format!("{{\"num_partitions\":{y}}}") });
        round_trip(&TopicOpen { name: n.clone() });
        round_trip(&TopicOpenResponse { options: "{}".into(), complete: b,
            placement: vec![Placement { rank: 0, thread: y }; 3] });
        round_trip(&TopicExists { name: n.clone() });
        round_trip(&TopicExistsResponse { exists: b });
        round_trip(&TopicList { after: n.clone() });
        round_trip(&TopicListResponse { names: vec![n.clone(), c.clone()], more: b });
        round_trip(&TopicComplete { name: n.clone() });
        round_trip(&ProduceResponse { first_id: x, count: y, credits: 4 });
        round_trip(&FetchData { topic: n.clone(), partition: y,
            ranges: vec![Range { id: x, offset: 1, len: 2 }], landing: regions });
        round_trip(&FetchDataResponse { total: x });
        round_trip(&Commit { topic: n.clone(), partition: y, consumer: c.clone(), next_id: x });
        round_trip(&CommitResponse { next_id: x });
        round_trip(&Subscribe { topic: n, partition: y, consumer: c });
    }
}

#[test]
fn produce_limits_are_checked_before_allocating() {
    let l = Limits::default();
    let ok = ProduceBatch {
        topic: "t".into(),
        partition: 0,
        producer_id: 1,
        seq: 0,
        count: 1,
        meta_len: 0,
        data_len: 10,
        table: None,
        regions: vec![RemoteRegion::new(0, 22, 1).unwrap()],
    };
    assert!(ProduceBatch::decode(&ok.to_vec(), &l).is_ok());
    let mut too_many = ok.clone();
    too_many.count = l.max_batch_events + 1;
    let e = ProduceBatch::decode(&too_many.to_vec(), &l).unwrap_err();
    assert_eq!(e.code, diaspora_rpc::wire::ErrorCode::TooLarge);
    let mut huge = ok.clone();
    huge.data_len = u64::MAX;
    let e = ProduceBatch::decode(&huge.to_vec(), &l).unwrap_err();
    assert_eq!(e.code, diaspora_rpc::wire::ErrorCode::TooLarge);
    let mut short_region = ok.clone();
    short_region.regions = vec![RemoteRegion::new(0, 21, 1).unwrap()];
    assert!(ProduceBatch::decode(&short_region.to_vec(), &l).is_err());
    let mut zero = ok;
    zero.count = 0;
    assert!(ProduceBatch::decode(&zero.to_vec(), &l).is_err());
}

#[test]
fn reserved_fields_must_be_zero() {
    let mut body = Hello {
        version: 1,
        client_id: 2,
        token: "x".into(),
    }
    .to_vec();
    body[2] = 1;
    assert!(Hello::decode(&body, &Limits::default()).is_err());
    let f = Fetch {
        topic: "t".into(),
        partition: 0,
        consumer: String::new(),
        from_id: 0,
        max_events: 1,
        max_bytes: 1,
        wait_ms: 0,
        flags: 0x80,
        landing: vec![],
    };
    assert!(Fetch::decode(&f.to_vec(), &Limits::default()).is_err());
}
