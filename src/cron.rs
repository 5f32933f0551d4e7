//! CronJob schedules as Kubernetes reads them: `spec.schedule` parsed and evaluated as
//! github.com/robfig/cron/v3's `ParseStandard` and `SpecSchedule.Next` do, `spec.timeZone`
//! checked as the API server's validation and Go's `time.LoadLocation` do.
//!
//! Written by hand on purpose. Crates such as croner accept extensions (`L`, `W`, `#`, seconds)
//! that the API server refuses, and build on chrono; podkit must refuse what Kubernetes refuses,
//! with robfig's messages, and fire when Kubernetes fires. So this follows robfig's grammar and
//! its search for the next time step by step, including its quirks: `*-5` is `*`, empty list
//! items (`1,,2`) are skipped, `N/step` runs from N to the field's maximum, a step above 1 makes
//! `*` no longer count as `*` for the day-of-month/day-of-week rule, no search goes past five
//! years, and `@every` rounds to whole seconds.
//!
//! Time zone changes (DST) behave as in robfig, which counts hours and minutes on the real clock
//! and rebuilds dates with Go's `time.Date` (emulated by [`go_date`]):
//! - a wall-clock time that does not exist (spring forward) is skipped: `30 2 * * *` in
//!   America/New_York does not fire on the day clocks go from 2:00 to 3:00, but at 2:30 the next
//!   day; `0 * * * *` fires at 1:00 and then 3:00;
//! - a wall-clock time that happens twice (fall back) fires twice: `30 1 * * *` fires at 1:30
//!   EDT and again at 1:30 EST an hour later (robfig's own tests pin both).

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};

/// What the API server says of a schedule that names its own time zone.
const TZ_IN_SCHEDULE: &str = "cannot use TZ or CRON_TZ in schedule, use timeZone field instead";

/// Set in a field's bits when it was written `*` or `?` (robfig's `starBit`): with it, the day of
/// month and the day of week must both match; without it on either, one is enough.
const STAR: u64 = 1 << 63;

/// robfig gives up after this many years past the time it starts from.
const YEARS: i32 = 5;

/// Restarts of the search (robfig's `goto WRAP`) before giving up. A five-year search restarts a
/// few hundred times at most (once a month, once a year, once per DST change); the bound only
/// guarantees the loop ends whatever time zone data it is given.
const MAX_WRAPS: u32 = 10_000;

/// A parsed `spec.schedule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Five fields, or a descriptor (`@daily`, ...) that stands for five fields.
    Fields(Fields),
    /// `@every <duration>`: a fixed delay, in whole seconds (at least one).
    Every { seconds: i64 },
}

/// The values each field accepts, one bit per value, plus [`STAR`]; robfig's `SpecSchedule`
/// without its seconds field, which the five-field grammar always sets to 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

/// A field's range and the names it accepts (robfig's `bounds`).
struct Bounds {
    min: u64,
    max: u64,
    names: &'static [(&'static str, u64)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

impl Schedule {
    /// Parses a schedule as robfig/cron's ParseStandard does; Err is the message to show
    /// (robfig's wording, e.g. "expected exactly 5 fields, found 6: [...]", "end of range (60)
    /// above maximum (59): 0-60", "unrecognized descriptor: @foo"). A schedule naming a time zone
    /// (`TZ=`, `CRON_TZ=`) is refused as the API server refuses it: any "TZ" in it.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        if text.contains("TZ") {
            return Err(TZ_IN_SCHEDULE.to_owned());
        }
        if text.is_empty() {
            return Err("empty spec string".to_owned());
        }
        // Not trimmed first, as robfig: " @daily" is one field of five, "@daily " unknown.
        if text.starts_with('@') {
            return descriptor(text);
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        };
        Ok(Schedule {
            kind: Kind::Fields(Fields {
                minute: field(minute, &MINUTES)?,
                hour: field(hour, &HOURS)?,
                dom: field(dom, &DOM)?,
                month: field(month, &MONTHS)?,
                dow: field(dow, &DOW)?,
            }),
        })
    }

    /// The first time strictly after `after` at which it fires, in `tz`; None when none within 5
    /// years (robfig's limit). `@every` fires the delay after `after`, truncated to its second.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // The second `after` falls in (Go's `t.Nanosecond()` is never negative).
        let second = after.as_second() - i64::from(after.subsec_nanosecond() < 0);
        let next = match self.kind {
            Kind::Every { seconds } => second.checked_add(seconds)?,
            Kind::Fields(fields) => fields.next(second.checked_add(1)?, tz)?,
        };
        Timestamp::from_second(next).ok()
    }
}

/// `spec.timeZone` as the API server checks it, and the zone to evaluate the schedule in. None
/// is the host's zone: Kubernetes uses the controller manager's local zone when it is unset.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    let Some(name) = name else {
        return Ok(TimeZone::system());
    };
    if name.is_empty() {
        return Err("timeZone must be nil or non-empty string".to_owned());
    }
    let unknown = || format!("unknown time zone {name}");
    // The validation's own rule on names (tzdb's naming rules, digits and '+' tolerated).
    let valid_part = |part: &str| {
        (1..=14).contains(&part.len())
            && !part.starts_with('-')
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".-_+".contains(&c))
    };
    if !name.split('/').all(valid_part) {
        return Err(unknown());
    }
    if name.eq_ignore_ascii_case("Local") {
        return Err(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .to_owned(),
        );
    }
    // Go's time.LoadLocation: "UTC" built in, ".." refused, otherwise a file of the tzdb. jiff's
    // lookup ignores case and knows "Etc/Unknown" without a file; Go's does neither.
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    if name.contains("..") {
        return Err("time: invalid location name".to_owned());
    }
    match TimeZone::get(name) {
        Ok(tz) if !tz.is_unknown() && tz.iana_name() == Some(name) => Ok(tz),
        _ => Err(unknown()),
    }
}

/// A field: a comma-separated list of ranges (robfig's `getField`; empty items are skipped).
fn field(text: &str, bounds: &Bounds) -> Result<u64, String> {
    text.split(',')
        .filter(|expr| !expr.is_empty())
        .try_fold(0, |bits, expr| Ok(bits | range(expr, bounds)?))
}

/// One range: `*` or `?`, `N` or `N-M`, each with an optional `/step` (robfig's `getRange`,
/// checks in its order).
fn range(expr: &str, bounds: &Bounds) -> Result<u64, String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let (start, mut end, mut extra);
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        // Whatever follows a hyphen is ignored here, as robfig does.
        (start, end, extra) = (bounds.min, bounds.max, STAR);
    } else {
        start = int_or_name(low_and_high[0], bounds)?;
        end = match low_and_high[..] {
            [_] => start,
            [_, high] => int_or_name(high, bounds)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        extra = 0;
    }
    let step = match range_and_step[..] {
        [_] => 1,
        [_, step] => {
            let step = int(step)?;
            if low_and_high.len() == 1 {
                end = bounds.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < bounds.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            bounds.min
        ));
    }
    if end > bounds.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            bounds.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut bits = 0;
    let mut value = start;
    while value <= end {
        bits |= 1 << value;
        value = value.saturating_add(step);
    }
    Ok(bits | extra)
}

/// A number or, in the month and day-of-week fields, a name in any case (robfig's
/// `parseIntOrName`).
fn int_or_name(expr: &str, bounds: &Bounds) -> Result<u64, String> {
    // Go's strings.ToLower maps by code point; besides ASCII, only 'İ' and the Kelvin sign
    // lower-case to letters of the names.
    let go_lower = |c: char| match c {
        '\u{130}' => 'i',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    match bounds
        .names
        .iter()
        .find(|(name, _)| expr.chars().map(go_lower).eq(name.chars()))
    {
        Some(&(_, value)) => Ok(value),
        None => int(expr),
    }
}

/// A non-negative number as Go's strconv.Atoi reads it (robfig's `mustParseInt`).
fn int(expr: &str) -> Result<u64, String> {
    let number = atoi(expr).map_err(|err| format!("failed to parse int from {expr}: {err}"))?;
    u64::try_from(number).map_err(|_| format!("negative number ({number}) not allowed: {expr}"))
}

/// Go's strconv.Atoi on a 64-bit machine: an optional sign and decimal digits, and its errors.
fn atoi(text: &str) -> Result<i64, String> {
    let error = |what: &str| format!("strconv.Atoi: parsing {}: {what}", strconv_quote(text));
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(error("invalid syntax"));
    }
    // Digit by digit, so that an overflow before a bad character reports the overflow, as Go.
    let mut magnitude: u64 = 0;
    for c in digits.bytes() {
        if !c.is_ascii_digit() {
            return Err(error("invalid syntax"));
        }
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(c - b'0')))
            .ok_or_else(|| error("value out of range"))?;
    }
    let number = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    number.ok_or_else(|| error("value out of range"))
}

/// Go's strconv.Quote, as far as a field can need it: escapes for quotes, backslashes and
/// control characters. (Go also escapes the other non-printable code points, format characters
/// and the like; those are kept here.)
fn strconv_quote(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if c.is_ascii_control() => quoted.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `@yearly` and the like, and `@every <duration>` (robfig's `parseDescriptor`).
fn descriptor(text: &str) -> Result<Schedule, String> {
    let all = |bounds: &Bounds| range("*", bounds).unwrap_or(STAR);
    let fields = |minute, hour, dom, month, dow| {
        Ok(Schedule {
            kind: Kind::Fields(Fields {
                minute,
                hour,
                dom,
                month,
                dow,
            }),
        })
    };
    match text {
        "@yearly" | "@annually" => return fields(1, 1, 1 << 1, 1 << 1, all(&DOW)),
        "@monthly" => return fields(1, 1, 1 << 1, all(&MONTHS), all(&DOW)),
        "@weekly" => return fields(1, 1, all(&DOM), all(&MONTHS), 1),
        "@daily" | "@midnight" => return fields(1, 1, all(&DOM), all(&MONTHS), all(&DOW)),
        "@hourly" => return fields(1, all(&HOURS), all(&DOM), all(&MONTHS), all(&DOW)),
        _ => {}
    }
    let Some(duration) = text.strip_prefix("@every ") else {
        return Err(format!("unrecognized descriptor: {text}"));
    };
    let nanos =
        go_duration(duration).map_err(|err| format!("failed to parse duration {text}: {err}"))?;
    // robfig's Every: less than a second is a second; fractions of a second are dropped.
    Ok(Schedule {
        kind: Kind::Every {
            seconds: nanos.max(NANOS_PER_SECOND) / NANOS_PER_SECOND,
        },
    })
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Go's time.ParseDuration, in nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, units ns, us
/// (µs, μs), ms, s, m, h, with its overflow checks and errors.
fn go_duration(text: &str) -> Result<i64, String> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || format!("time: invalid duration {}", time_quote(text));
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part: [0-9]*
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let mut whole: u64 = 0;
        for c in rest[..digits].bytes() {
            if whole > LIMIT / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(c - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
        }
        rest = &rest[digits..];
        // The fraction: (\.[0-9]*)? — precision stops growing when it would overflow.
        let (mut fraction, mut scale, mut fraction_digits) = (0u64, 1f64, 0);
        if let Some(after_dot) = rest.strip_prefix('.') {
            rest = after_dot;
            fraction_digits =
                rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let mut overflow = false;
            for c in rest[..fraction_digits].bytes() {
                if overflow || fraction > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(c - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            rest = &rest[fraction_digits..];
        }
        if digits == 0 && fraction_digits == 0 {
            return Err(invalid());
        }
        // The unit: everything up to the next digit or dot.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(format!(
                "time: missing unit in duration {}",
                time_quote(text)
            ));
        }
        let unit_name = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    time_quote(unit_name),
                    time_quote(text)
                ));
            }
        };
        if whole > LIMIT / unit {
            return Err(invalid());
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // As Go: in float64, which is exact enough for fractions of an hour.
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return Err(invalid());
            }
        }
        total += value;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if negative {
        return Ok(0i64.wrapping_sub_unsigned(total));
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// The time package's own quoting in its errors: bytes of non-ASCII and control characters as
/// `\xNN`.
fn time_quote(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        if !c.is_ascii() || c < ' ' {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                quoted.push_str(&format!("\\x{byte:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
    }
    quoted.push('"');
    quoted
}

impl Fields {
    /// robfig's `SpecSchedule.Next` from `t` (Unix seconds, already the second after the time
    /// asked about), step for step: month, day, hour, minute and second are checked in turn; a
    /// field that does not match is advanced (the first time, after resetting the smaller
    /// fields), and when a larger field rolls over the search starts again from the month.
    /// Hours and minutes are advanced on the real clock, dates through [`go_date`].
    fn next(&self, mut t: i64, tz: &TimeZone) -> Option<i64> {
        let civil = |t: i64| Some(tz.to_datetime(Timestamp::from_second(t).ok()?));
        let mut added = false;
        let year_limit = i32::from(civil(t)?.year()) + YEARS;
        'wrap: for _ in 0..MAX_WRAPS {
            if i32::from(civil(t)?.year()) > year_limit {
                return None;
            }
            while !has(self.month, civil(t)?.month()) {
                if !added {
                    added = true;
                    let now = civil(t)?;
                    t = go_date(tz, now.year(), now.month().into(), 1, 0, 0, 0)?;
                }
                t = add_date(tz, civil(t)?, 1, 0)?;
                if civil(t)?.month() == 1 {
                    continue 'wrap;
                }
            }
            while !self.day_matches(civil(t)?) {
                if !added {
                    added = true;
                    let now = civil(t)?;
                    t = go_date(
                        tz,
                        now.year(),
                        now.month().into(),
                        now.day().into(),
                        0,
                        0,
                        0,
                    )?;
                }
                t = add_date(tz, civil(t)?, 0, 1)?;
                // Where midnight does not exist, go_date lands an hour off: back to the day's
                // first hour.
                let hour = i64::from(civil(t)?.hour());
                if hour > 12 {
                    t += (24 - hour) * 3600;
                } else {
                    t -= hour * 3600;
                }
                if civil(t)?.day() == 1 {
                    continue 'wrap;
                }
            }
            while !has(self.hour, civil(t)?.hour()) {
                if !added {
                    added = true;
                    let now = civil(t)?;
                    let (month, day, hour) = (now.month(), now.day(), now.hour());
                    t = go_date(tz, now.year(), month.into(), day.into(), hour.into(), 0, 0)?;
                }
                t += 3600;
                if civil(t)?.hour() == 0 {
                    continue 'wrap;
                }
            }
            while !has(self.minute, civil(t)?.minute()) {
                if !added {
                    added = true;
                    t = t.div_euclid(60) * 60;
                }
                t += 60;
                if civil(t)?.minute() == 0 {
                    continue 'wrap;
                }
            }
            // The seconds field is 0: on to the next whole minute, and check it all again.
            while civil(t)?.second() != 0 {
                added = true;
                t += 1;
                if civil(t)?.second() == 0 {
                    continue 'wrap;
                }
            }
            return Some(t);
        }
        None
    }

    /// robfig's `dayMatches`: with `*` in either day field both must match (so `0 0 * * 5` is
    /// Fridays only); with neither, either may (Vixie cron: `0 0 13 * 5` is the 13th and every
    /// Friday).
    fn day_matches(&self, date: DateTime) -> bool {
        let dom = has(self.dom, date.day());
        let dow = has(self.dow, date.weekday().to_sunday_zero_offset());
        if (self.dom | self.dow) & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }
}

/// Whether `value` (a minute, hour, day, month or weekday: never negative) is among `bits`.
fn has(bits: u64, value: i8) -> bool {
    (bits >> value) & 1 == 1
}

/// Go's `t.AddDate(0, months, days)` for a time `t` whose wall clock is `now`.
fn add_date(tz: &TimeZone, now: DateTime, months: i64, days: i64) -> Option<i64> {
    go_date(
        tz,
        now.year(),
        i64::from(now.month()) + months,
        i64::from(now.day()) + days,
        now.hour().into(),
        now.minute().into(),
        now.second().into(),
    )
}

/// Go's `time.Date(year, month, day, hour, minute, second, 0, tz)` in Unix seconds: months past
/// December and days past the month's end roll over; a wall-clock time is placed with the
/// offset in effect at that wall-clock reading taken as UTC, corrected once if that offset is
/// not in effect at the result. So in a gap or an overlap the result depends on the offset's
/// sign: 2:30 on a spring-forward day is 1:30 EST in New York but 3:30 CEST in Berlin, 1:30 on a
/// fall-back day the first (EDT) in New York but 2:30 the second (CET) in Berlin. robfig's
/// search relies on this (its correction of days whose midnight does not exist).
fn go_date(
    tz: &TimeZone,
    year: i16,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
) -> Option<i64> {
    let year = i16::try_from(i64::from(year) + (month - 1).div_euclid(12)).ok()?;
    let month = i8::try_from((month - 1).rem_euclid(12) + 1).ok()?;
    let first = Offset::UTC
        .to_timestamp(Date::new(year, month, 1).ok()?.at(0, 0, 0, 0))
        .ok()?
        .as_second();
    let wall = first + (day - 1) * 86_400 + hour * 3600 + minute * 60 + second;
    let offset = |t: i64| {
        Some(i64::from(
            tz.to_offset(Timestamp::from_second(t).ok()?).seconds(),
        ))
    };
    let guess = offset(wall)?;
    Some(wall - offset(wall - guess)?)
}
