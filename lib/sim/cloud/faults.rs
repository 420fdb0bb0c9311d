//! Fault injection rules, installed per test through `POST /_sim/faults` (JSON shapes in the
//! module doc of [`crate::sim::cloud`]).
//!
//! Invariants:
//! - Call rules (`fail`, `throttle`) count the calls they match from the moment they are
//!   installed; call number `nth` to `nth + count - 1` (1-based) fire. Every matching rule
//!   counts every matching call, and the first firing rule (in list order) decides the answer.
//! - State rules (`stall`, `no_device`) hold while installed: removing them lets the stalled
//!   transition happen at once if it is already due.
//! - A rule restricted to a `volume` / `vm` id matches a call whose JSON body mentions that id
//!   anywhere (VolumeId, VmId, ResourceIds, filters), and a transition of that volume / on that
//!   VM.
//! - Rules and their counters are part of the persisted state: a crash-restart keeps them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::ApiError;

/// A state transition that a `stall` rule can hold back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// Volume `creating → available`.
    Create,
    /// Link `attaching → attached`.
    Attach,
    /// Link `detaching → gone`.
    Detach,
    /// Volume `deleting → gone`.
    Delete,
}

/// Which Outscale limiter a `throttle` rule impersonates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// 429, code 24 `ErrorOperationThrottledPerAccount`.
    #[default]
    Account,
    /// 429, code 25 `ErrorOperationThrottledPerCall`.
    Call,
    /// 503, code 6 `ErrorOperationThrottled` (whole platform).
    Platform,
}

fn one() -> u64 {
    1
}

fn default_status() -> u16 {
    500
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultRule {
    /// Answer matching calls `nth ..= nth+count-1` with an error.
    Fail {
        /// Call name (`CreateVolume`) or `*` for every call.
        call: String,
        /// First matching call that fails (1-based).
        #[serde(default = "one")]
        nth: u64,
        /// How many consecutive matching calls fail.
        #[serde(default = "one")]
        count: u64,
        /// HTTP status (default 500).
        #[serde(default = "default_status")]
        status: u16,
        /// Error code (default "2000").
        #[serde(default)]
        code: Option<String>,
        /// Error type (default "InternalError").
        #[serde(default, rename = "type")]
        error_type: Option<String>,
        /// Error details (default "injected fault").
        #[serde(default)]
        details: Option<String>,
        /// Carry the call out, then answer the error anyway (a lost response).
        #[serde(default)]
        apply: bool,
        /// Only calls whose body mentions this volume id.
        #[serde(default)]
        volume: Option<String>,
        /// Only calls whose body mentions this VM id.
        #[serde(default)]
        vm: Option<String>,
    },
    /// Answer matching calls `nth ..= nth+count-1` with Outscale's throttling error.
    Throttle {
        /// Call name or `*`.
        call: String,
        /// First matching call throttled (1-based).
        #[serde(default = "one")]
        nth: u64,
        /// How many consecutive matching calls are throttled.
        #[serde(default = "one")]
        count: u64,
        /// Which limiter (default `account`: 429 code 24).
        #[serde(default)]
        scope: ThrottleScope,
        /// Only calls whose body mentions this volume id.
        #[serde(default)]
        volume: Option<String>,
        /// Only calls whose body mentions this VM id.
        #[serde(default)]
        vm: Option<String>,
    },
    /// Hold a transition back while the rule is installed.
    Stall {
        /// Which transition.
        transition: Transition,
        /// Only this volume.
        #[serde(default)]
        volume: Option<String>,
        /// Only links to / volumes on this VM.
        #[serde(default)]
        vm: Option<String>,
    },
    /// Links become `attached` without the host effect: the device never appears on the host.
    NoDevice {
        /// Only this volume.
        #[serde(default)]
        volume: Option<String>,
        /// Only links to this VM.
        #[serde(default)]
        vm: Option<String>,
    },
}

/// An installed rule and how many calls it has matched so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installed {
    /// The rule as given.
    pub rule: FaultRule,
    /// Matching calls seen since installation.
    #[serde(default)]
    pub seen: u64,
}

/// What a firing call rule does to the call.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    /// The error to answer.
    pub error: ApiError,
    /// Whether the call is carried out before the error is answered.
    pub apply: bool,
}

/// Whether `body` mentions `id` as a whole string value anywhere.
fn mentions(body: &Value, id: &str) -> bool {
    match body {
        Value::String(s) => s == id,
        Value::Array(a) => a.iter().any(|v| mentions(v, id)),
        Value::Object(o) => o.values().any(|v| mentions(v, id)),
        _ => false,
    }
}

fn call_matches(
    rule_call: &str,
    volume: &Option<String>,
    vm: &Option<String>,
    call: &str,
    body: &Value,
) -> bool {
    (rule_call == "*" || rule_call == call)
        && volume.as_deref().is_none_or(|v| mentions(body, v))
        && vm.as_deref().is_none_or(|v| mentions(body, v))
}

fn scope_matches(
    volume: &Option<String>,
    vm: &Option<String>,
    volume_id: &str,
    vm_id: Option<&str>,
) -> bool {
    volume.as_deref().is_none_or(|v| v == volume_id)
        && vm.as_deref().is_none_or(|v| Some(v) == vm_id)
}

/// Checks a rule list for problems a test author would want reported at installation.
pub fn validate(rules: &[FaultRule]) -> Result<(), String> {
    for (i, r) in rules.iter().enumerate() {
        match r {
            FaultRule::Fail {
                nth, count, status, ..
            } => {
                if *nth == 0 || *count == 0 {
                    return Err(format!("rule {i}: nth and count start at 1"));
                }
                if !(400..=599).contains(status) {
                    return Err(format!("rule {i}: status {status} is not an error status"));
                }
            }
            FaultRule::Throttle { nth, count, .. } => {
                if *nth == 0 || *count == 0 {
                    return Err(format!("rule {i}: nth and count start at 1"));
                }
            }
            FaultRule::Stall { .. } | FaultRule::NoDevice { .. } => {}
        }
    }
    Ok(())
}

/// Counts this call against every matching call rule and returns the error to inject, if any.
pub fn on_call(rules: &mut [Installed], call: &str, body: &Value) -> Option<Injected> {
    let mut first: Option<Injected> = None;
    for inst in rules.iter_mut() {
        let fires = match &inst.rule {
            FaultRule::Fail {
                call: c,
                nth,
                count,
                volume,
                vm,
                ..
            }
            | FaultRule::Throttle {
                call: c,
                nth,
                count,
                volume,
                vm,
                ..
            } => {
                if !call_matches(c, volume, vm, call, body) {
                    continue;
                }
                inst.seen += 1;
                inst.seen >= *nth && inst.seen < nth + count
            }
            FaultRule::Stall { .. } | FaultRule::NoDevice { .. } => continue,
        };
        if fires && first.is_none() {
            first = injection(&inst.rule);
        }
    }
    first
}

/// What a call rule answers when it fires.
fn injection(rule: &FaultRule) -> Option<Injected> {
    match rule {
        FaultRule::Fail {
            status,
            code,
            error_type,
            details,
            apply,
            ..
        } => Some(Injected {
            error: ApiError::new(
                *status,
                code.as_deref().unwrap_or("2000"),
                error_type.as_deref().unwrap_or("InternalError"),
                details.clone().unwrap_or_else(|| "injected fault".into()),
            ),
            apply: *apply,
        }),
        FaultRule::Throttle { scope, .. } => Some(Injected {
            error: throttled(*scope),
            apply: false,
        }),
        FaultRule::Stall { .. } | FaultRule::NoDevice { .. } => None,
    }
}

/// Outscale's throttling answer for a limiter.
pub fn throttled(scope: ThrottleScope) -> ApiError {
    match scope {
        ThrottleScope::Account => ApiError::new(
            429,
            "24",
            "AccessDenied",
            "ErrorOperationThrottledPerAccount: Request rate exceeded.",
        ),
        ThrottleScope::Call => ApiError::new(
            429,
            "25",
            "AccessDenied",
            "ErrorOperationThrottledPerCall: Request rate exceeded.",
        ),
        ThrottleScope::Platform => ApiError::new(
            503,
            "6",
            "AccessDenied",
            "ErrorOperationThrottled: Request rate exceeded.",
        ),
    }
}

/// Whether an installed `stall` rule holds `transition` of `volume_id` (linked to `vm_id`).
pub fn stalled(
    rules: &[Installed],
    transition: Transition,
    volume_id: &str,
    vm_id: Option<&str>,
) -> bool {
    rules.iter().any(|i| match &i.rule {
        FaultRule::Stall {
            transition: t,
            volume,
            vm,
        } => *t == transition && scope_matches(volume, vm, volume_id, vm_id),
        _ => false,
    })
}

/// Whether an installed `no_device` rule suppresses the host effect of this link.
pub fn no_device(rules: &[Installed], volume_id: &str, vm_id: &str) -> bool {
    rules.iter().any(|i| match &i.rule {
        FaultRule::NoDevice { volume, vm } => scope_matches(volume, vm, volume_id, Some(vm_id)),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn install(v: Value) -> Vec<Installed> {
        let rules: Vec<FaultRule> = serde_json::from_value(v).unwrap();
        validate(&rules).unwrap();
        rules
            .into_iter()
            .map(|rule| Installed { rule, seen: 0 })
            .collect()
    }

    #[test]
    fn nth_call_of_a_kind_fails_once() {
        let mut r = install(json!([{"kind":"fail","call":"CreateVolume","nth":2}]));
        let body = json!({});
        assert!(on_call(&mut r, "ReadVolumes", &body).is_none());
        assert!(on_call(&mut r, "CreateVolume", &body).is_none());
        let e = on_call(&mut r, "CreateVolume", &body).unwrap();
        assert_eq!((e.error.status, e.error.code.as_str()), (500, "2000"));
        assert!(!e.apply);
        assert!(on_call(&mut r, "CreateVolume", &body).is_none());
    }

    #[test]
    fn throttle_counts_and_scopes_by_id() {
        let mut r = install(json!([
            {"kind":"throttle","call":"*","count":2,"scope":"platform","volume":"vol-1"}
        ]));
        let other = json!({"VolumeId":"vol-2"});
        let mine = json!({"Filters":{"VolumeIds":["vol-1"]}});
        assert!(on_call(&mut r, "ReadVolumes", &other).is_none());
        for _ in 0..2 {
            let e = on_call(&mut r, "ReadVolumes", &mine).unwrap();
            assert_eq!((e.error.status, e.error.code.as_str()), (503, "6"));
        }
        assert!(on_call(&mut r, "ReadVolumes", &mine).is_none());
    }

    #[test]
    fn every_matching_rule_counts_first_firing_wins() {
        let mut r = install(json!([
            {"kind":"fail","call":"LinkVolume","nth":2,"status":400,"code":"9","type":"X"},
            {"kind":"throttle","call":"*","nth":1,"count":2}
        ]));
        let b = json!({});
        assert_eq!(on_call(&mut r, "LinkVolume", &b).unwrap().error.status, 429);
        assert_eq!(on_call(&mut r, "LinkVolume", &b).unwrap().error.status, 400);
        assert_eq!(r[0].seen, 2);
        assert_eq!(r[1].seen, 2);
    }

    #[test]
    fn stall_and_no_device_scope() {
        let r = install(json!([
            {"kind":"stall","transition":"attach","vm":"i-1"},
            {"kind":"no_device","volume":"vol-9"}
        ]));
        assert!(stalled(&r, Transition::Attach, "vol-1", Some("i-1")));
        assert!(!stalled(&r, Transition::Attach, "vol-1", Some("i-2")));
        assert!(!stalled(&r, Transition::Create, "vol-1", Some("i-1")));
        assert!(no_device(&r, "vol-9", "i-5"));
        assert!(!no_device(&r, "vol-8", "i-5"));
    }

    #[test]
    fn bad_rules_are_refused() {
        let rules: Vec<FaultRule> =
            serde_json::from_value(json!([{"kind":"fail","call":"*","nth":0}])).unwrap();
        assert!(validate(&rules).is_err());
        let rules: Vec<FaultRule> =
            serde_json::from_value(json!([{"kind":"fail","call":"*","status":200}])).unwrap();
        assert!(validate(&rules).is_err());
        assert!(serde_json::from_value::<FaultRule>(json!({"kind":"explode"})).is_err());
        // A misspelt restriction must not silently widen a rule to every volume.
        let typo = json!({"kind":"stall","transition":"attach","volum":"vol-1"});
        assert!(serde_json::from_value::<FaultRule>(typo).is_err());
    }
}
