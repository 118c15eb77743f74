//! Spending budgets: so many USD per UTC day or calendar month (`day:5`, `month:250`), as
//! keys, tenants and routes set them (docs/configuration.md, "Keys and tenants"), and the
//! calendar arithmetic of their periods.

use serde::{Deserialize, Serialize};

/// A spending budget: so many USD per UTC day or calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub period: Period,
    pub usd: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The start of the period `now_ms` is in, and the start of the next, in Unix ms (UTC).
    pub fn bounds(self, now_ms: i64) -> (i64, i64) {
        const DAY: i64 = 86_400_000;
        let day = now_ms.div_euclid(DAY);
        match self {
            Period::Day => (day * DAY, (day + 1) * DAY),
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let start = days_from_civil(y, m, 1) * DAY;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (start, days_from_civil(ny, nm, 1) * DAY)
            }
        }
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's civil-from-days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds as RFC 3339 in UTC, to the second: `2026-12-01T00:00:00Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Midnight UTC of a `YYYY-MM-DD` date, in Unix milliseconds.
pub fn date_ms(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // 2027-02-31 is not a date: it would come back as another day.
    (civil_from_days(days) == (y, m, d)).then_some(days * 86_400_000)
}

/// `day:5` or `month:100` (USD, a plain decimal number).
pub fn parse_budget(text: &str) -> Result<Budget, String> {
    let (period, amount) = text
        .split_once(':')
        .ok_or_else(|| format!("budget `{text}`: write PERIOD:USD, like day:5 or month:250.50"))?;
    let period = match period.trim().to_ascii_lowercase().as_str() {
        "day" | "daily" => Period::Day,
        "month" | "monthly" => Period::Month,
        other => {
            return Err(format!(
                "budget `{text}`: the period `{other}` is day or month"
            ));
        }
    };
    let amount = amount.trim().trim_start_matches('$');
    let valid = !amount.is_empty()
        && amount.chars().all(|c| c.is_ascii_digit() || c == '.')
        && amount.matches('.').count() <= 1
        && amount
            .split('.')
            .nth(1)
            .is_none_or(|cents| cents.len() <= 6);
    let usd: f64 = amount
        .parse()
        .ok()
        .filter(|v: &f64| valid && v.is_finite() && *v > 0.0)
        .ok_or_else(|| {
            format!(
                "budget `{text}`: the amount `{amount}` is not a positive number of USD like 5 or 250.50 (no currency sign or thousands separator)"
            )
        })?;
    Ok(Budget { period, usd })
}

/// `[tenants.NAME]`: what every key of a tenant may spend together.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// `day:X` or `month:X` USD, summed over all the tenant's keys.
    pub budget_usd: Option<String>,
    /// A share of the budget (0 < x < 1) at which a soft alert goes to `[alerts] webhook`.
    pub alert_at: Option<f64>,
}

/// Problems of a `budget_usd` and its `alert_at`, as (key, message).
pub fn check(budget_usd: Option<&str>, alert_at: Option<f64>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(text) = budget_usd
        && let Err(e) = parse_budget(text)
    {
        out.push(("budget_usd".to_string(), e));
    }
    if let Some(share) = alert_at {
        if !(share > 0.0 && share < 1.0) {
            out.push((
                "alert_at".to_string(),
                format!("{share} is not a share strictly between 0 and 1 (0.8 alerts at 80% of the budget)"),
            ));
        } else if budget_usd.is_none() {
            out.push((
                "alert_at".to_string(),
                "needs a `budget_usd` to be a share of".to_string(),
            ));
        }
    }
    out
}
