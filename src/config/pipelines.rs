//! The shape of every virtual model's middleware lists, checked when a snapshot is built: each
//! `MiddlewareCall` gives exactly one of `config` and `config_id`, and a `config_id` names an
//! entry of the file's `middleware_configs:` map.
//!
//! `check` looks at structure; `compile` then hands each entry's lists to
//! `crate::middleware::Pipelines::build`, which knows the middlewares (names, phases, config
//! keys, patterns). Messages name the entry, the list, the index and the field.

use std::collections::BTreeMap;

use std::collections::HashMap;
use std::sync::Arc;

use super::validate::Merged;
use crate::middleware::call::MiddlewareConfigEntry;
use crate::middleware::Pipelines;

/// The compiled pipelines of every merged entry that has any middleware, by trimmed source;
/// or every error, each naming the entry, the list, the index and the field. Entries of
/// `middleware_configs:` are checked on their own too, used or not.
pub fn compile(
    merged: &[Merged<'_>],
    configs: &BTreeMap<String, MiddlewareConfigEntry>,
    label: &str,
) -> Result<HashMap<String, Arc<Pipelines>>, Vec<String>> {
    let mut errors = check(merged, configs);
    errors.extend(
        crate::middleware::check_config_entries(configs)
            .into_iter()
            .map(|e| format!("{label}: {e}")),
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut out = HashMap::new();
    for m in merged {
        let [(_, request), (_, response), (_, post)] = m.spec.middleware_lists();
        if request.is_empty() && response.is_empty() && post.is_empty() {
            continue;
        }
        let source = m.spec.source.as_deref().unwrap_or("").trim();
        match Pipelines::build(request, response, post, configs) {
            Ok(p) => {
                out.insert(source.to_string(), Arc::new(p));
            }
            Err(es) => {
                let at = format!("{} (source {source:?})", m.origin.location());
                errors.extend(es.into_iter().map(|e| format!("{at}: {e}")));
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Every structural error of the merged entries' middleware lists.
pub fn check(
    merged: &[Merged<'_>],
    configs: &BTreeMap<String, MiddlewareConfigEntry>,
) -> Vec<String> {
    let mut errors = Vec::new();
    for m in merged {
        let lists = m.spec.middleware_lists();
        if lists.iter().all(|(_, calls)| calls.is_empty()) {
            continue;
        }
        let source = m.spec.source.as_deref().unwrap_or("").trim();
        let at = format!("{} (source {source:?})", m.origin.location());
        for (list, calls) in lists {
            for (i, call) in calls.iter().enumerate() {
                let field = format!("{list}[{i}]");
                if call.name.trim().is_empty() {
                    errors.push(format!("{at}: {field}.name is blank"));
                }
                match (&call.config, &call.config_id) {
                    (Some(_), Some(_)) => errors.push(format!(
                        "{at}: {field}.config_id: config and config_id are both set; give exactly one of them"
                    )),
                    (None, None) => errors.push(format!(
                        "{at}: {field}.config: neither config nor config_id is set; give exactly one of them"
                    )),
                    (Some(c), None) if !c.is_object() => errors.push(format!(
                        "{at}: {field}.config must be an object"
                    )),
                    (Some(_), None) => {}
                    (None, Some(id)) if !configs.contains_key(id.trim()) => {
                        let known = if configs.is_empty() {
                            "the config file declares no middleware_configs".to_string()
                        } else {
                            format!(
                                "declared: {}",
                                configs.keys().cloned().collect::<Vec<_>>().join(", ")
                            )
                        };
                        errors.push(format!(
                            "{at}: {field}.config_id {id:?} names no entry of middleware_configs ({known})"
                        ));
                    }
                    (None, Some(_)) => {}
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::VirtualModelSpec;
    use crate::routing::model::Origin;

    fn merged(spec: &VirtualModelSpec) -> Merged<'_> {
        Merged {
            origin: Origin::Store,
            spec,
            shared: None,
            overrides_store: false,
        }
    }

    fn spec(json: serde_json::Value) -> VirtualModelSpec {
        serde_json::from_value(json).unwrap()
    }

    fn configs() -> BTreeMap<String, MiddlewareConfigEntry> {
        let mut m = BTreeMap::new();
        m.insert(
            "default/p".to_string(),
            MiddlewareConfigEntry {
                config_type: "set_params_config".into(),
                config: serde_json::json!({}),
            },
        );
        m
    }

    #[test]
    fn inline_config_or_a_known_config_id_passes() {
        let s = spec(serde_json::json!({"source": "w/a", "target": "p/m",
            "request_middleware": [{"name": "set-params", "config_type": "set_params_config", "config": {}}],
            "post_response_middleware": [{"name": "log", "config_id": "default/p"}]}));
        assert!(check(&[merged(&s)], &configs()).is_empty());
    }

    #[test]
    fn each_structural_error_names_entry_list_index_and_field() {
        let s = spec(serde_json::json!({"source": "w/a", "target": "p/m",
            "request_middleware": [
                {"name": "a", "config": {}},
                {"name": "b", "config": {}, "config_id": "default/p"},
                {"name": "c"}],
            "response_middleware": [{"name": "d", "config_id": "nope/x"}]}));
        let e = check(&[merged(&s)], &configs());
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(
            e[0],
            "store (source \"w/a\"): request_middleware[1].config_id: config and config_id are both set; give exactly one of them"
        );
        assert!(
            e[1].starts_with("store (source \"w/a\"): request_middleware[2].config: neither"),
            "{}",
            e[1]
        );
        assert!(
            e[2].contains("response_middleware[0].config_id \"nope/x\" names no entry of middleware_configs (declared: default/p)"),
            "{}",
            e[2]
        );
    }
}
