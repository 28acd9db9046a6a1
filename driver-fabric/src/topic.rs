//! A topic of the fabric driver: the server's description plus the topic's policies.

use std::sync::Arc;
use std::time::Duration;

use diaspora_api::{
    ConsumerBackend, ConsumerOptions, PartitionInfo, ProducerBackend, ProducerOptions, Result,
    TopicBackend, TopicPolicies, Value,
};
use serde_json::json;

use crate::consumer::FabricConsumer;
use crate::producer::FabricProducer;
use crate::service::{Service, TopicInfo};

/// What producers, consumers and the topic handle share.
pub(crate) struct TopicShared {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) info: TopicInfo,
    pub(crate) policies: TopicPolicies,
    pub(crate) timeout: Duration,
}

/// The fabric driver's [`TopicBackend`].
pub struct FabricTopic {
    pub(crate) shared: Arc<TopicShared>,
}

impl FabricTopic {
    pub(crate) fn open(
        service: Arc<dyn Service>,
        name: &str,
        timeout: Duration,
    ) -> Result<FabricTopic> {
        let info = service.open_topic(name).map_err(|e| e.into_api())?;
        let policies = TopicPolicies::from_options(&info.options)?;
        Ok(FabricTopic {
            shared: Arc::new(TopicShared {
                service,
                info,
                policies,
                timeout,
            }),
        })
    }
}

impl TopicBackend for FabricTopic {
    fn name(&self) -> &str {
        &self.shared.info.name
    }

    fn options(&self) -> Value {
        self.shared.info.options.clone()
    }

    fn partitions(&self) -> Result<Vec<PartitionInfo>> {
        Ok((0..self.shared.info.num_partitions)
            .map(|index| PartitionInfo {
                index,
                info: json!({
                    "server": self.shared.info.placement.get(index).cloned().unwrap_or_default(),
                }),
            })
            .collect())
    }

    fn policies(&self) -> &TopicPolicies {
        &self.shared.policies
    }

    fn producer(&self, name: &str, options: ProducerOptions) -> Result<Arc<dyn ProducerBackend>> {
        Ok(Arc::new(FabricProducer::new(
            self.shared.clone(),
            name,
            options,
        )))
    }

    fn consumer(&self, name: &str, options: ConsumerOptions) -> Result<Arc<dyn ConsumerBackend>> {
        Ok(Arc::new(FabricConsumer::new(
            self.shared.clone(),
            name,
            options,
        )?))
    }

    fn mark_as_complete(&self) -> Result<()> {
        self.shared
            .service
            .mark_complete(&self.shared.info)
            .map_err(|e| e.into_api())
    }

    fn is_complete(&self) -> Result<bool> {
        self.shared
            .service
            .is_complete(&self.shared.info)
            .map_err(|e| e.into_api())
    }
}
