//! NeMo's list: `page` (from 1), `page_size`, `sort`, `exclude_autoprovisioned`, workspace `-`
//! for all, answered in NeMo's envelope (`data`, `pagination`, `sort`).

use std::cmp::Ordering;

use serde_json::{json, Value};

use super::view::{current_items, Item};
use super::ALL_WORKSPACES;
use crate::admin::{unprocessable, Response};
use crate::app::App;
use crate::proxy::respond::ApiError;

const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 200;
const DEFAULT_SORT: &str = "-created_at";
const SORT_FIELDS: [&str; 4] = ["created_at", "updated_at", "name", "workspace"];

/// The list's query: `page`, `page_size`, `sort`, `exclude_autoprovisioned`.
#[derive(Debug, PartialEq)]
struct Query {
    page: usize,
    page_size: usize,
    sort: String,
    exclude_autoprovisioned: bool,
}

fn bad_query(param: &str, message: String) -> ApiError {
    unprocessable("invalid_query", message, Some(param.to_string()))
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut q = Query {
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
            sort: DEFAULT_SORT.to_string(),
            exclude_autoprovisioned: false,
        };
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .trim()
                    .to_string()
            };
            let (k, v) = (decode(k), decode(v));
            let number = |max: usize| -> Result<usize, ApiError> {
                match v.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(bad_query(
                        &k,
                        format!("{k} {v:?} must be a whole number from 1 to {max}"),
                    )),
                }
            };
            match k.as_str() {
                "page" => q.page = number(usize::MAX)?,
                "page_size" => q.page_size = number(MAX_PAGE_SIZE)?,
                "sort" => {
                    let field = v.strip_prefix('-').unwrap_or(&v);
                    if !SORT_FIELDS.contains(&field) {
                        return Err(bad_query(
                            "sort",
                            format!(
                                "sort {v:?} is unknown; use {}, each optionally prefixed with - for descending order",
                                SORT_FIELDS.join(", ")
                            ),
                        ));
                    }
                    q.sort = v;
                }
                "exclude_autoprovisioned" => {
                    q.exclude_autoprovisioned = match v.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(bad_query(
                                &k,
                                format!("exclude_autoprovisioned {v:?} must be true or false"),
                            ))
                        }
                    }
                }
                other if other.starts_with("filter") => {
                    return Err(bad_query(
                        "filter",
                        "filter is not supported; list one workspace (or - for all) and sort"
                            .into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn compare(&self, a: &Item, b: &Item) -> Ordering {
        let field = self.sort.strip_prefix('-').unwrap_or(&self.sort);
        let primary = match field {
            // Times are whole seconds; within one, ids (time-ordered, `store::new_id`) keep
            // the order of creation.
            "created_at" => a
                .created_at
                .cmp(&b.created_at)
                .then_with(|| a.id().cmp(&b.id())),
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            "workspace" => a.workspace.cmp(&b.workspace),
            _ => a.name.cmp(&b.name),
        };
        let primary = if self.sort.starts_with('-') {
            primary.reverse()
        } else {
            primary
        };
        primary
            .then_with(|| a.workspace.cmp(&b.workspace))
            .then_with(|| a.name.cmp(&b.name))
    }
}

/// One page of `items` in NeMo's envelope.
fn page(mut items: Vec<Item>, workspace: &str, q: &Query) -> Value {
    items.retain(|i| {
        (workspace == ALL_WORKSPACES || i.workspace == workspace)
            && !(q.exclude_autoprovisioned && i.autoprovisioned())
    });
    items.sort_by(|a, b| q.compare(a, b));
    let total = items.len();
    let data: Vec<Value> = items
        .iter()
        .skip((q.page - 1).saturating_mul(q.page_size))
        .take(q.page_size)
        .map(Item::to_json)
        .collect();
    json!({
        "data": data,
        "pagination": {
            "page": q.page,
            "page_size": q.page_size,
            "current_page_size": data.len(),
            "total_pages": total.div_ceil(q.page_size),
            "total_results": total,
        },
        "sort": q.sort,
    })
}

/// `GET .../workspaces/{workspace}/virtual-models`.
pub(super) fn list(app: &App, workspace: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let q = Query::parse(query)?;
    Ok(Response::json(
        200,
        &page(current_items(app)?, workspace, &q),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_defaults_and_errors() {
        let q = Query::parse(None).unwrap();
        assert_eq!(
            (q.page, q.page_size, q.sort.as_str()),
            (1, 20, "-created_at")
        );
        let q = Query::parse(Some(
            "page=2&page_size=5&sort=name&exclude_autoprovisioned=true",
        ))
        .unwrap();
        assert_eq!((q.page, q.page_size, q.sort.as_str()), (2, 5, "name"));
        assert!(q.exclude_autoprovisioned);
        let e = Query::parse(Some("sort=-size")).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (422, Some("sort")));
        assert!(
            e.message
                .contains("created_at, updated_at, name, workspace"),
            "{}",
            e.message
        );
        assert_eq!(Query::parse(Some("page=0")).unwrap_err().status, 422);
        assert_eq!(Query::parse(Some("page_size=201")).unwrap_err().status, 422);
        assert_eq!(
            Query::parse(Some("exclude_autoprovisioned=maybe"))
                .unwrap_err()
                .status,
            422
        );
    }

    #[test]
    fn entries_created_in_one_second_list_newest_first_by_default() {
        use crate::config::schema::VirtualModelSpec;
        let item = |name: &str| Item {
            workspace: "w".into(),
            name: name.into(),
            source: format!("w/{name}"),
            spec: VirtualModelSpec {
                id: Some(crate::store::new_id()),
                ..VirtualModelSpec::default()
            },
            models: Vec::new(),
            passthrough: false,
            created_at: 1_000,
            updated_at: 1_000,
            etag: String::new(),
        };
        // Created b, then a, then c, all in the same second.
        let items = vec![item("b"), item("a"), item("c")];
        let names = |sort: &str| {
            let q = Query::parse(Some(&format!("sort={sort}"))).unwrap();
            let mut v = items.clone();
            v.sort_by(|x, y| q.compare(x, y));
            v.iter().map(|i| i.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names("-created_at"), ["c", "a", "b"]);
        assert_eq!(names("created_at"), ["b", "a", "c"]);
        assert_eq!(names("name"), ["a", "b", "c"]);
    }
}
