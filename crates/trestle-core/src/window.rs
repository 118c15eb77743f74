//! Spans of time as people write them: `500ms`, `90s`, `15m`, `24h`, `7d`, `2w`.

use std::time::Duration;

/// Reads a span of time: a number and a unit, `ms`, `s`, `m`, `h`, `d` or `w`
/// (`"500ms"`, `"90s"`, `"1h"`, `"7d"`); `"0"` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 1h or 7d"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        "w" => n * 7.0 * 86_400.0,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: use ms, s, m, h, d or w, as 7d"
            ));
        }
    };
    if !(0.0..=3650.0 * 86_400.0).contains(&secs) {
        return Err(format!("`{text}` is out of range (0 to 10 years)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A window like `15m`, `24h` or `7d` in milliseconds; a bare number is hours.
pub fn window_ms(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if !t.is_empty() && t != "0" && t.bytes().all(|b| b.is_ascii_digit()) {
        return parse_duration(&format!("{t}h")).map(|d| d.as_millis() as i64);
    }
    parse_duration(t).map(|d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_bad_ones_say_why() {
        assert_eq!(window_ms("15m"), Ok(900_000));
        assert_eq!(window_ms("7d"), Ok(604_800_000));
        assert_eq!(window_ms("2"), Ok(7_200_000));
        assert_eq!(window_ms("500ms"), Ok(500));
        assert!(
            window_ms("7y")
                .unwrap_err()
                .contains("use ms, s, m, h, d or w")
        );
        assert!(window_ms("d").unwrap_err().contains("not a duration"));
        assert!(window_ms("99999w").unwrap_err().contains("out of range"));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }
}
