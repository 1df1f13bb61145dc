//! What a manager key may write: the virtual models whose source is `GROUP/...` for its
//! `manage:GROUP` scopes, through every admin API (REST, GoModel's, NeMo's workspaces, the
//! dashboard's calls), and nothing else (403 `forbidden`).
//!
//! Two checks: `route` admits a manager only to the virtual-model routes, and every write's
//! changes are checked in `writes::commit`, where all three APIs meet. The caller's access
//! reaches `commit` through `enter`, a guard that holds it for the admin call running on this
//! (blocking) thread, so the handlers between need not pass it along. Nothing here reads the
//! store or a request body.

use std::cell::RefCell;

use super::auth::Access;
use crate::api_error::ApiError;
use crate::store::Change;

thread_local! {
    static CURRENT: RefCell<Access> = const { RefCell::new(Access::Full) };
}

/// Holds `access` for this thread until dropped.
pub struct Entered(());

/// Makes `access` the current caller's for the admin call on this thread.
pub fn enter(access: &Access) -> Entered {
    CURRENT.with(|c| *c.borrow_mut() = access.clone());
    Entered(())
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = Access::Full);
    }
}

/// The group a source belongs to: the part before its first `/`.
pub fn group_of(source: &str) -> Option<&str> {
    source
        .split_once('/')
        .map(|(g, _)| g.trim())
        .filter(|g| !g.is_empty())
}

/// Whether `access` may write the virtual model with this source.
pub fn may_write(access: &Access, source: &str) -> Result<(), ApiError> {
    let Access::Manager(key) = access else {
        return Ok(());
    };
    let group = group_of(source);
    if group.is_some_and(|g| key.managed_groups().any(|m| m == g)) {
        return Ok(());
    }
    let groups: Vec<&str> = key.managed_groups().collect();
    Err(crate::auth::forbidden(format!(
        "API key {:?} manages only virtual models under {}; {source:?} is not one",
        key.name,
        groups
            .iter()
            .map(|g| format!("{g}/"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Whether the current caller may write the virtual model a request addresses. Checked before
/// the row is looked up, so a manager learns nothing of rows outside its groups: 403 comes
/// ahead of 404 and of 409 for config entries and passthroughs.
pub fn check_addressed(source: &str) -> Result<(), ApiError> {
    CURRENT.with(|c| may_write(&c.borrow(), source.trim()))
}

/// Checks every change of a write against the current caller's access.
pub fn check_changes(changes: &[Change]) -> Result<(), ApiError> {
    CURRENT.with(|c| {
        let access = c.borrow();
        changes.iter().try_for_each(|ch| match ch {
            Change::Upsert(row) => may_write(&access, row.source()),
            Change::Delete(source) => may_write(&access, source),
        })
    })
}

/// Whether a manager may use this admin route at all (the virtual-model routes of every API
/// and the model list the dashboard reads); the master key may use every route.
pub fn may_route(access: &Access, path: &str) -> Result<(), ApiError> {
    let Access::Manager(key) = access else {
        return Ok(());
    };
    let vms = "/admin/api/v1/virtual-models";
    let allowed = path == vms
        || path.starts_with(&format!("{vms}/"))
        || path == "/admin/virtual-models"
        || path == "/admin/api/v1/models"
        || super::nemo::is_api_path(path)
        || path.starts_with("/admin/dashboard")
        || path == "/admin"
        || path == "/admin/";
    if allowed {
        return Ok(());
    }
    Err(crate::auth::forbidden(format!(
        "API key {:?} may only manage virtual models; {path} needs the master key",
        key.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn manager(groups: &[&str]) -> Access {
        let scopes: Vec<String> = groups.iter().map(|g| format!("manage:{g}")).collect();
        let spec = crate::keys::KeySpec {
            scopes: Some(scopes),
            ..Default::default()
        };
        Access::Manager(Arc::new(spec.into_key("m", 0).unwrap()))
    }

    #[test]
    fn a_manager_writes_only_under_its_groups() {
        let m = manager(&["team-a"]);
        assert!(may_write(&m, "team-a/chat").is_ok());
        for other in [
            "team-b/chat",
            "team-a",
            "team-ab/x",
            "openai/gpt-4o",
            "chat",
        ] {
            let e = may_write(&m, other).unwrap_err();
            assert_eq!((e.status, e.code), (403, "forbidden"), "{other}");
        }
        assert!(may_write(&Access::Full, "anything").is_ok());
    }

    #[test]
    fn the_entered_access_checks_changes_and_ends_with_the_guard() {
        let delete = [Change::Delete("team-b/x".into())];
        {
            let _g = enter(&manager(&["team-a"]));
            assert!(check_changes(&delete).is_err());
            assert!(check_changes(&[Change::Delete("team-a/x".into())]).is_ok());
        }
        assert!(check_changes(&delete).is_ok());
    }

    #[test]
    fn an_addressed_source_outside_the_groups_is_forbidden_before_any_lookup() {
        {
            let _g = enter(&manager(&["team-a"]));
            let e = check_addressed("other/missing").unwrap_err();
            assert_eq!((e.status, e.code), (403, "forbidden"));
            assert!(check_addressed(" team-a/x ").is_ok());
        }
        assert!(check_addressed("other/missing").is_ok());
    }

    #[test]
    fn managers_reach_only_the_virtual_model_routes() {
        let m = manager(&["g"]);
        assert!(may_route(&m, "/admin/api/v1/virtual-models/g%2Fx").is_ok());
        assert!(may_route(&m, "/apis/inference-gateway/v2/workspaces/g/virtual-models").is_ok());
        for p in [
            "/admin/api/v1/keys",
            "/admin/api/v1/status",
            "/admin/api/v1/usage",
        ] {
            assert_eq!(may_route(&m, p).unwrap_err().code, "forbidden", "{p}");
        }
    }
}
