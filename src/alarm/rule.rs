//! One threshold rule and the state that decides when it fires: a report whose value crosses
//! the threshold raises one alarm; the rule fires again only after a report has cleared it (gone
//! back past `clear`, the hysteresis level) and `cooldownSecs` have passed since the last alarm.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use utoipa::ToSchema;

/// Most rules a device may have.
pub const MAX_RULES: usize = 16;
/// Longest `param` name, in bytes.
pub const MAX_PARAM_BYTES: usize = 64;
/// Longest cooldown: a week.
pub const MAX_COOLDOWN_SECS: u64 = 7 * 86_400;

/// A comparison of the reported value with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
        }
    }

    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
        }
    }

    /// Whether `value` is back on the quiet side of `clear`.
    fn cleared(self, value: f64, clear: f64) -> bool {
        match self {
            Op::Gt => value <= clear,
            Op::Ge => value < clear,
            Op::Lt => value >= clear,
            Op::Le => value > clear,
            Op::Eq => value != clear,
        }
    }
}

/// A rule as its owner posts it: `{"param","op","threshold","clear","cooldownSecs"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// A top-level key of the device's params; its value is a number or a numeric string.
    pub param: String,
    pub op: Op,
    #[schema(value_type = f64)]
    pub threshold: Number,
    /// The hysteresis level the value must go back past before the rule fires again: at or
    /// below it for `>`, below for `>=`, at or above for `<`, above for `<=`. Default: the
    /// threshold. For `==` it must be the threshold (the value clears by being different).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub clear: Option<Number>,
    /// After an alarm the rule stays quiet at least this long, even once cleared. Default 0.
    #[serde(default)]
    pub cooldown_secs: u64,
}

impl Rule {
    pub fn threshold(&self) -> f64 {
        self.threshold.as_f64().unwrap_or(f64::NAN)
    }

    pub fn clear_level(&self) -> f64 {
        self.clear.as_ref().and_then(Number::as_f64).unwrap_or_else(|| self.threshold())
    }

    /// Checks a posted rule; the reason when it is not acceptable.
    pub fn check(&self) -> Result<(), String> {
        if self.param.is_empty() || self.param.len() > MAX_PARAM_BYTES {
            return Err(format!("param must be 1 to {MAX_PARAM_BYTES} bytes"));
        }
        let (t, c) = (self.threshold(), self.clear_level());
        if !t.is_finite() || !c.is_finite() {
            return Err("threshold and clear must be finite numbers".to_owned());
        }
        let fits = match self.op {
            Op::Gt | Op::Ge => c <= t,
            Op::Lt | Op::Le => c >= t,
            Op::Eq => c == t,
        };
        if !fits {
            return Err(format!(
                "clear {c} is on the wrong side of threshold {t} for `{}` (it must not be past the threshold; for `==` it must equal it)",
                self.op.symbol()
            ));
        }
        if self.cooldown_secs > MAX_COOLDOWN_SECS {
            return Err(format!("cooldownSecs must be at most {MAX_COOLDOWN_SECS}"));
        }
        Ok(())
    }
}

/// A reported value as a number: a JSON number, or a string holding one (firmware often reports
/// sensor readings as strings, e.g. `"currentTemperature":"24.5"`).
pub fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// What the evaluator remembers of one rule between reports.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// Set after an alarm, until a report clears the rule.
    tripped: bool,
    last_alarm: Option<Instant>,
}

impl Watch {
    /// Takes one reported value at `now`; true when it raises an alarm.
    pub fn observe(&mut self, rule: &Rule, value: f64, now: Instant) -> bool {
        if self.tripped {
            if rule.op.cleared(value, rule.clear_level()) {
                self.tripped = false;
            }
            return false;
        }
        if !rule.op.holds(value, rule.threshold()) {
            return false;
        }
        let cooling = self.last_alarm.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(rule.cooldown_secs));
        if cooling {
            return false;
        }
        self.tripped = true;
        self.last_alarm = Some(now);
        true
    }
}
