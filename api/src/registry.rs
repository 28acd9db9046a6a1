//! The named registry of user-defined policies: [`register_validator`],
//! [`register_partition_selector`] and [`register_serializer`].
//!
//! A topic's options name its policies by spec, `"name"` or `{"type": "name", ...}`. Besides the
//! built-in names, a spec may name
//!
//! * a policy registered in this process under `name` (built-in names cannot be replaced);
//! * `"name:library"`, which first loads the policy library `library` (a path, or a file name
//!   the dynamic loader searches for) and takes policy `name` from it;
//! * a bare `name` that is neither built in nor registered: `lib<name>.so` is loaded from the
//!   first directory of `LD_LIBRARY_PATH` holding it, as for drivers.
//!
//! Policy libraries are built with [`export_policies!`](crate::export_policies!) and checked like
//! driver libraries (see [`crate::dylib`]). The factory receives the whole spec, so a policy's
//! parameters live next to its type, are stored with the topic (the files driver writes them in
//! `topic.json`), and a topic reopens with the same policies as long as the name resolves
//! again (registered again, or the library is still there).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::policy::{PartitionSelector, Serializer, Validator};

/// Builds a validator from its spec (the JSON object or string naming it in the topic options).
pub type ValidatorFactory = fn(&Value) -> Result<Arc<dyn Validator>>;
/// Builds a partition selector from its spec.
pub type PartitionSelectorFactory = fn(&Value) -> Result<Arc<dyn PartitionSelector>>;
/// Builds a serializer from its spec.
pub type SerializerFactory = fn(&Value) -> Result<Arc<dyn Serializer>>;

/// The three kinds of topic policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum PolicyKind {
    /// A [`Validator`].
    Validator = 1,
    /// A [`PartitionSelector`].
    PartitionSelector = 2,
    /// A [`Serializer`].
    Serializer = 3,
}

impl PolicyKind {
    /// The option key naming a policy of this kind in topic options.
    pub fn key(self) -> &'static str {
        match self {
            PolicyKind::Validator => "validator",
            PolicyKind::PartitionSelector => "partition_selector",
            PolicyKind::Serializer => "serializer",
        }
    }

    /// Human-readable name of the kind ("partition selector").
    pub fn noun(self) -> &'static str {
        match self {
            PolicyKind::Validator => "validator",
            PolicyKind::PartitionSelector => "partition selector",
            PolicyKind::Serializer => "serializer",
        }
    }

    /// The kind numbered `code` across the policy-library boundary.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(PolicyKind::Validator),
            2 => Some(PolicyKind::PartitionSelector),
            3 => Some(PolicyKind::Serializer),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Registry {
    validators: BTreeMap<String, ValidatorFactory>,
    selectors: BTreeMap<String, PartitionSelectorFactory>,
    serializers: BTreeMap<String, SerializerFactory>,
}

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(Registry::default()))
}

/// Registers a validator under `name` (replacing a previous registration of that name). A
/// built-in name (`default`, `json`, `required_fields`, `schema`, `eventbridge`) keeps meaning
/// the built-in one.
pub fn register_validator(name: &str, factory: ValidatorFactory) {
    registry()
        .write()
        .validators
        .insert(name.to_owned(), factory);
}

/// Registers a partition selector under `name` (built-in names keep their meaning).
pub fn register_partition_selector(name: &str, factory: PartitionSelectorFactory) {
    registry()
        .write()
        .selectors
        .insert(name.to_owned(), factory);
}

/// Registers a serializer under `name` (built-in names keep their meaning).
pub fn register_serializer(name: &str, factory: SerializerFactory) {
    registry()
        .write()
        .serializers
        .insert(name.to_owned(), factory);
}

/// Names registered for policies of `kind` (built-in names excluded).
pub fn registered_policies(kind: PolicyKind) -> Vec<String> {
    let r = registry().read();
    match kind {
        PolicyKind::Validator => r.validators.keys().cloned().collect(),
        PolicyKind::PartitionSelector => r.selectors.keys().cloned().collect(),
        PolicyKind::Serializer => r.serializers.keys().cloned().collect(),
    }
}

pub(crate) fn validator_factory(name: &str) -> Option<ValidatorFactory> {
    registry().read().validators.get(name).copied()
}

pub(crate) fn selector_factory(name: &str) -> Option<PartitionSelectorFactory> {
    registry().read().selectors.get(name).copied()
}

pub(crate) fn serializer_factory(name: &str) -> Option<SerializerFactory> {
    registry().read().serializers.get(name).copied()
}

fn is_registered(kind: PolicyKind, name: &str) -> bool {
    match kind {
        PolicyKind::Validator => validator_factory(name).is_some(),
        PolicyKind::PartitionSelector => selector_factory(name).is_some(),
        PolicyKind::Serializer => serializer_factory(name).is_some(),
    }
}

/// Resolves a non-built-in policy type: `name:library` loads `library`; a bare unregistered
/// `name` tries `lib<name>.so` on `LD_LIBRARY_PATH`. Returns the policy name, registered on
/// success; `known` lists the built-in names for the error message.
pub(crate) fn resolve(kind: PolicyKind, ty: &str, known: &str) -> Result<String> {
    let (name, library) = match ty.split_once(':') {
        Some((n, l)) => (n, Some(l)),
        None => (ty, None),
    };
    let key = kind.key();
    if let Some(library) = library {
        if name.is_empty() || library.is_empty() {
            return Err(Error::option(
                key,
                format!("\"{ty}\" must be \"<name>:<library>\""),
            ));
        }
        crate::dylib::load_policy_library(library)?;
        if is_registered(kind, name) {
            return Ok(name.to_owned());
        }
        return Err(Error::DriverLibrary {
            library: library.to_owned(),
            reason: format!(
                "it registers no {} \"{name}\" (registered: {})",
                kind.noun(),
                list(&registered_policies(kind))
            ),
        });
    }
    if is_registered(kind, name) {
        return Ok(name.to_owned());
    }
    let searched = match crate::dylib::find_library(name, &crate::dylib::search_path()) {
        Ok(path) => {
            crate::dylib::load_policy_library(&path.display().to_string())?;
            if is_registered(kind, name) {
                return Ok(name.to_owned());
            }
            format!("{} registers none", path.display())
        }
        Err(what) => what,
    };
    Err(Error::option(
        key,
        format!(
            "unknown {} \"{name}\" (built in: {known}; registered: {}; {searched})",
            kind.noun(),
            list(&registered_policies(kind))
        ),
    ))
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
