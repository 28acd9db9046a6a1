//! The fabric driver: a [`DriverBackend`] over a [`Service`] (normally a
//! [`RemoteService`](crate::remote::RemoteService) talking to `diaspora-server`).

use std::sync::Arc;
use std::time::Duration;

use diaspora_api::{DriverBackend, Error, Result, TopicBackend, Value};

use crate::service::Service;
use crate::topic::FabricTopic;

/// Most partitions a topic may have (the files driver's limit: the server stores topics in its
/// format).
pub const MAX_PARTITIONS: u64 = 65_536;

/// The fabric driver.
pub struct FabricDriver {
    service: Arc<dyn Service>,
    timeout: Duration,
}

impl FabricDriver {
    /// A driver over any [`Service`]; `timeout` is the deadline of every call.
    pub fn with_service(service: Arc<dyn Service>, timeout: Duration) -> FabricDriver {
        FabricDriver { service, timeout }
    }
}

/// Checks what the client can check of topic options before asking the server (which checks
/// everything again): `num_partitions` is an integer from 1 to [`MAX_PARTITIONS`].
pub fn check_topic_options(options: &Value) -> Result<()> {
    let obj = match options {
        Value::Null => return Ok(()),
        Value::Object(o) => o,
        _ => return Err(Error::option("topic", "options must be a JSON object")),
    };
    if let Some(v) = obj.get("num_partitions") {
        if !v
            .as_u64()
            .is_some_and(|n| (1..=MAX_PARTITIONS).contains(&n))
        {
            return Err(Error::option(
                "topic.num_partitions",
                format!("must be an integer from 1 to {MAX_PARTITIONS}"),
            ));
        }
    }
    diaspora_api::TopicPolicies::from_options(options)?;
    Ok(())
}

impl DriverBackend for FabricDriver {
    fn create_topic(&self, name: &str, options: &Value) -> Result<()> {
        diaspora_api::validate_topic_name(name)?;
        check_topic_options(options)?;
        let options = if options.is_null() {
            Value::Object(Default::default())
        } else {
            options.clone()
        };
        self.service
            .create_topic(name, &options)
            .map_err(|e| e.into_api())
    }

    fn open_topic(&self, name: &str) -> Result<Arc<dyn TopicBackend>> {
        diaspora_api::validate_topic_name(name)?;
        Ok(Arc::new(FabricTopic::open(
            self.service.clone(),
            name,
            self.timeout,
        )?))
    }

    fn topic_exists(&self, name: &str) -> Result<bool> {
        diaspora_api::validate_topic_name(name)?;
        self.service.topic_exists(name).map_err(|e| e.into_api())
    }

    fn list_topics(&self) -> Result<Vec<String>> {
        self.service.list_topics().map_err(|e| e.into_api())
    }
}
