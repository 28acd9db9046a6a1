//! Topic management: create, exists, list, options, visible across driver instances.

use diaspora_api::json;

use crate::util::{create_topic, open_topic};
use crate::DriverFixture;

/// Created topics exist, are listed sorted, and report their options.
pub fn create_list_and_exists(f: &dyn DriverFixture) {
    let driver = f.driver();
    assert_eq!(driver.list_topics().expect("list"), Vec::<String>::new());
    assert!(!driver.topic_exists("b").expect("exists"));
    for name in ["b", "a.1", "C_3", "a-2"] {
        create_topic(&driver, name, 1);
    }
    let mut expected = vec!["C_3", "a-2", "a.1", "b"];
    expected.sort_unstable();
    assert_eq!(
        driver.list_topics().expect("list"),
        expected,
        "sorted topic list"
    );
    for name in expected {
        assert!(driver.topic_exists(name).expect("exists"), "{name} exists");
        assert_eq!(open_topic(&driver, name).name(), name);
    }
    assert!(
        !driver.topic_exists("a").expect("exists"),
        "no prefix match"
    );
}

/// A topic created by one driver instance is visible, with its options, from another.
pub fn topics_visible_from_other_instance(f: &dyn DriverFixture) {
    let first = f.driver();
    first
        .create_topic("shared", json!({"num_partitions": 3}))
        .expect("create");
    let second = f.driver();
    assert!(second.topic_exists("shared").expect("exists"));
    assert_eq!(
        second.list_topics().expect("list"),
        vec!["shared".to_owned()]
    );
    let topic = open_topic(&second, "shared");
    assert_eq!(topic.partitions().expect("partitions").len(), 3);
    let options = topic.options();
    assert_eq!(options.get("num_partitions"), Some(&json!(3)), "{options}");
}

/// An unknown topic option is either rejected with `InvalidOption` (and nothing is created) or
/// kept in the topic's `options()`; it is never silently dropped.
pub fn unknown_topic_option_rejected_or_kept(f: &dyn DriverFixture) {
    let driver = f.driver();
    match driver.create_topic("custom", json!({"num_partitions": 1, "custom": "kept"})) {
        Err(e) => {
            assert!(
                matches!(e.root(), diaspora_api::Error::InvalidOption { .. }),
                "expected InvalidOption, got {e:?}"
            );
            assert!(!driver.topic_exists("custom").expect("exists"));
        }
        Ok(()) => {
            let options = open_topic(&f.driver(), "custom").options();
            assert_eq!(options.get("custom"), Some(&json!("kept")), "{options}");
        }
    }
}
