//! Partial updates (PATCH), as JSON merge patch (RFC 7396): an absent key keeps its value,
//! `null` clears it, any other value (a list included, so `[]` empties one) replaces it, and
//! objects merge key by key.
//!
//! Pure value manipulation: no validation, no I/O.

use serde_json::Value;

/// Applies `patch` to `target` in place.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_keeps_null_clears_lists_replace_objects_merge() {
        let mut v = json!({"source": "s", "description": "d", "user_paths": ["/a"],
                           "routing_config": {"type": "priority-based-routing", "targets": ["x"]}});
        merge(
            &mut v,
            &json!({"description": null, "user_paths": [], "routing_config": {"type": null}, "enabled": false}),
        );
        assert_eq!(
            v,
            json!({"source": "s", "user_paths": [], "routing_config": {"targets": ["x"]}, "enabled": false})
        );
    }
}
