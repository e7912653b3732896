//! Environment overrides: `CONSCOPE_<SECTION>__<KEY>=value` replaces `section.key` in the file.
//!
//! Sections nest with more `__` (`CONSCOPE_KAFKA__TOPICS__RAW_PRICES__PARTITIONS=8`); the two
//! top-level keys are `CONSCOPE_INSTANCE` and `CONSCOPE_INSTANCES`. The value's type is taken from
//! the defaults: lists are comma-separated (`CONSCOPE_KAFKA__BROKERS=h1:9092,h2:9092`), numbers
//! and booleans are parsed, durations stay strings (`"250ms"`). An override naming a key that does
//! not exist is an error, so a typo is never silently ignored. Variables without `__` (other than
//! the two above) are not overrides and are left alone.

use toml::Value;

use super::ConfigError;

const PREFIX: &str = "CONSCOPE_";
const TOP_LEVEL: [&str; 2] = ["INSTANCE", "INSTANCES"];

pub(super) fn apply_overrides(
    tree: &mut Value,
    skeleton: &Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| {
            k.strip_prefix(PREFIX)
                .is_some_and(|rest| rest.contains("__") || TOP_LEVEL.contains(&rest))
        })
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let path: Vec<String> = var[PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let env_error = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        // Keys of named tables (`alert.notifiers.<name>.url`) exist only when the file has them.
        let template = lookup(skeleton, &path)
            .or_else(|| lookup(tree, &path))
            .cloned()
            .ok_or_else(|| env_error(format!("no setting `{}` exists", path.join("."))))?;
        let value = typed(&template, &raw).map_err(env_error)?;
        set(tree, &path, value).map_err(env_error)?;
    }
    Ok(())
}

fn lookup<'a>(mut node: &'a Value, path: &[String]) -> Option<&'a Value> {
    for key in path {
        node = node.as_table()?.get(key)?;
    }
    Some(node)
}

fn typed(template: &Value, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    Ok(match template {
        Value::Integer(_) => Value::Integer(
            raw.parse()
                .map_err(|_| format!("`{raw}` is not a whole number"))?,
        ),
        Value::Float(_) => Value::Float(raw.parse().map_err(|_| format!("`{raw}` is not a number"))?),
        Value::Boolean(_) => Value::Boolean(match raw {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(format!("`{raw}` is not true or false")),
        }),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Value::Table(_) => return Err("names a whole section, not a setting".into()),
        Value::String(_) | Value::Datetime(_) => Value::String(raw.to_string()),
    })
}

fn set(tree: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty setting name")?;
    let mut node = tree;
    for key in parents {
        let table = node
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a section in the file"))?;
        node = table
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Default::default()));
    }
    node.as_table_mut()
        .ok_or_else(|| format!("`{last}`'s parent is not a section in the file"))?
        .insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn lists_are_comma_separated() {
        let config = Config::from_toml_str(
            "",
            "t",
            vars(&[("CONSCOPE_KAFKA__BROKERS", "127.0.0.1:9092, 127.0.0.1:9093")]),
        )
        .expect("valid");
        assert_eq!(config.kafka.brokers, vec!["127.0.0.1:9092", "127.0.0.1:9093"]);
    }

    #[test]
    fn nested_numbers_durations_and_top_level_keys() {
        let config = Config::from_toml_str(
            "[kafka.topics.raw_prices]\npartitions = 2\n",
            "t",
            vars(&[
                ("CONSCOPE_KAFKA__TOPICS__RAW_PRICES__PARTITIONS", "8"),
                ("CONSCOPE_PIPELINE__FLUSH_INTERVAL", "250ms"),
                ("CONSCOPE_INSTANCES", "2"),
                ("CONSCOPE_UNRELATED", "ignored"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.kafka.topics.raw_prices.partitions, 8);
        assert_eq!(config.pipeline.flush_interval.as_millis(), 250);
        assert_eq!(config.instances, 2);
    }

    #[test]
    fn unknown_override_names_the_variable() {
        let err =
            Config::from_toml_str("", "t", vars(&[("CONSCOPE_KAFKA__BROKERZ", "x")])).expect_err("typo");
        assert!(matches!(err, ConfigError::Env { ref var, .. } if var == "CONSCOPE_KAFKA__BROKERZ"));
    }

    #[test]
    fn bad_number_is_reported() {
        let err = Config::from_toml_str("", "t", vars(&[("CONSCOPE_POSTGRES__POOL_SIZE", "lots")]))
            .expect_err("not a number");
        assert!(err.to_string().contains("not a whole number"), "{err}");
    }
}
