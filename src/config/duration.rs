//! The one duration syntax of every `KIJO_*` duration setting (`30s`, `5m`, `1h`, `1h30m`), with
//! the bounds each setting needs. Every duration ends up in `Instant` or timestamp arithmetic,
//! so an upper bound is part of parsing: `9223372036854775807s` is a configuration error, not
//! an overflow panic later.

use std::time::Duration;

/// The longest duration any setting accepts: a year is already beyond every sensible value, and
/// far below what `Instant + Duration` (or twice a poll interval) can hold.
pub(crate) const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Inclusive bounds of one setting.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub min: Duration,
    pub max: Duration,
}

impl Bounds {
    /// At least `min`, at most a year.
    pub(crate) const fn at_least(min: Duration) -> Bounds {
        Bounds { min, max: YEAR }
    }
}

/// Parses a duration (jiff's friendly format) and checks it against `bounds`. The message says
/// what is expected; the caller names the setting.
pub(crate) fn parse_duration(s: &str, bounds: Bounds) -> Result<Duration, String> {
    const HINT: &str = "expected a duration like 30s, 5m or 1h";
    let d: jiff::SignedDuration = s.trim().parse().map_err(|_| HINT.to_owned())?;
    let d = Duration::try_from(d).map_err(|_| format!("{HINT}, not negative"))?;
    if d < bounds.min {
        return Err(format!("must be at least {}", human(bounds.min)));
    }
    if d > bounds.max {
        return Err(format!("must be at most {}", human(bounds.max)));
    }
    Ok(d)
}

/// A bound as the user would write it (`1s`, `10m`, `8760h`).
fn human(d: Duration) -> String {
    match jiff::SignedDuration::try_from(d) {
        Ok(sd) => format!("{sd:#}"),
        Err(_) => format!("{}s", d.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_syntax() {
        let b = Bounds::at_least(Duration::from_secs(1));
        assert_eq!(parse_duration("5m", b), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration(" 1h30m ", b), Ok(Duration::from_secs(5400)));
        type Case<'a> = (&'a str, &'a str);
        let cases: &[Case<'_>] = &[
            ("300", "like 30s"),
            ("-5m", "not negative"),
            ("0s", "must be at least 1s"),
            ("9223372036854775807s", "must be at most 8760h"),
            ("8761h", "must be at most 8760h"),
        ];
        for (input, want) in cases {
            let got = parse_duration(input, b).unwrap_err();
            assert!(got.contains(want), "{input:?}: {got:?} lacks {want:?}");
        }
        let lease = Bounds {
            min: Duration::from_secs(2),
            max: Duration::from_secs(3600),
        };
        assert_eq!(
            parse_duration("2h", lease).unwrap_err(),
            "must be at most 1h"
        );
        assert_eq!(
            parse_duration("10m", Bounds::at_least(Duration::from_secs(60))),
            Ok(Duration::from_secs(600))
        );
    }
}
