//! Names that travel in certificates, URLs and container names: DNS-safe.

use crate::FieldError;
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, fmt};

/// Longest node name (a DNS name).
pub const MAX_NAME_LEN: usize = 253;
/// Most labels a node may carry.
pub const MAX_LABELS: usize = 64;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 256;

/// A node's name: a lowercase DNS name, the one in its agent certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Checks `value` as the request field `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        check_dns_name(value).map_err(|msg| FieldError::new(field, msg))?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeName {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse("name", &value)
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> Self {
        name.0
    }
}

/// A lowercase DNS name: dot-separated labels of `a-z`, `0-9` and `-`, each
/// 1–63 characters, not starting or ending with `-`; 253 characters at most.
fn check_dns_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters; the limit is {MAX_NAME_LEN}",
            value.len()
        ));
    }
    for label in value.split('.') {
        check_dns_label(label).map_err(|msg| format!("{msg} (in {value:?})"))?;
    }
    Ok(())
}

/// Checks a single lowercase DNS label (app and tenant names).
pub fn check_dns_label_value(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("must not be empty".into());
    }
    check_dns_label(label)
}

fn check_dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("has an empty DNS label".into());
    }
    if label.len() > 63 {
        return Err(format!(
            "has a DNS label of {} characters; the limit is 63",
            label.len()
        ));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "may hold only lowercase letters, digits, '-' and '.'; found {bad:?}"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("must not start or end a DNS label with '-'".into());
    }
    Ok(())
}

/// Checks node labels: at most [`MAX_LABELS`], keys DNS-safe (as Kubernetes
/// label names, `/` allowed once for a prefix), values bounded.
pub fn validate_labels(field: &str, labels: &HashMap<String, String>) -> Result<(), FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(FieldError::new(
            field,
            format!("has {} labels; the limit is {MAX_LABELS}", labels.len()),
        ));
    }
    for (key, value) in labels {
        let name = key.rsplit('/').next().unwrap_or(key);
        let prefix_ok = match key.split_once('/') {
            Some((prefix, _)) => check_dns_name(prefix).is_ok(),
            None => true,
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !prefix_ok || !name_ok {
            return Err(FieldError::new(
                format!("{field}[{key:?}]"),
                "label keys are 1–63 of letters, digits, '-', '_', '.', with an optional DNS prefix and '/'",
            ));
        }
        if value.len() > MAX_LABEL_VALUE_LEN {
            return Err(FieldError::new(
                format!("{field}[{key:?}]"),
                format!(
                    "value is {} bytes; the limit is {MAX_LABEL_VALUE_LEN}",
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_must_be_dns_safe() {
        assert!(NodeName::parse("name", "node-1").is_ok());
        assert!(NodeName::parse("name", "node-1.rack2.example").is_ok());
        for bad in [
            "", "Node", "node_1", "-node", "node-", "a..b", "nodé", "a b",
        ] {
            let err = NodeName::parse("name", bad).unwrap_err();
            assert_eq!(err.field, "name", "{bad:?}");
        }
        let long = "a".repeat(64);
        assert!(NodeName::parse("name", &long)
            .unwrap_err()
            .message
            .contains("63"));
        let too_long = ["abc"; 70].join(".");
        assert!(NodeName::parse("name", &too_long)
            .unwrap_err()
            .message
            .contains("253"));
    }

    #[test]
    fn labels_are_bounded_and_named_safely() {
        let mut labels = HashMap::new();
        labels.insert("zone".to_owned(), "a".to_owned());
        labels.insert("berth.dev/gpu".to_owned(), "none".to_owned());
        assert!(validate_labels("labels", &labels).is_ok());
        labels.insert("bad key".to_owned(), "x".to_owned());
        assert!(validate_labels("labels", &labels)
            .unwrap_err()
            .field
            .starts_with("labels["));
        let many: HashMap<_, _> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_labels("labels", &many)
            .unwrap_err()
            .message
            .contains("64"));
        let mut long = HashMap::new();
        long.insert("k".to_owned(), "v".repeat(300));
        assert!(validate_labels("labels", &long)
            .unwrap_err()
            .message
            .contains("256"));
    }
}
