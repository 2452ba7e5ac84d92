//! A parser of the Prometheus text exposition format, enough for nf-maglev's `/metrics`.

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels, in order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
    /// The line as served.
    pub line: String,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Every sample, in page order.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the Prometheus text exposition format (comments skipped, unparsable lines ignored).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics { samples }
    }

    /// Sum of the samples named `name` whose labels include every `(key, value)` of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Samples whose name contains `part`.
    pub fn matching<'a>(&'a self, part: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name.contains(part))
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = match line.find('}') {
        Some(end) => (&line[..=end], line[end + 1..].trim()),
        None => line.split_once(' ')?,
    };
    let value = value.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
        None => (head, Vec::new()),
    };
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
        line: line.to_string(),
    })
}

fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        out.push((key.trim().trim_start_matches(',').trim().to_string(), value));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lines_parse() {
        let m = Metrics::parse(
            "# HELP x y\n# TYPE x counter\nnf_drops_total{reason=\"malformed\",worker=\"0\"} 3\n\
             nf_drops_total{reason=\"malformed\",worker=\"1\"} 4\nnf_drops_total{reason=\"no_vip\"} 9\n\
             up 1\nweird{a=\"q\\\"uote\"} 2.5\n",
        );
        assert_eq!(m.sum("nf_drops_total", &[("reason", "malformed")]), 7.0);
        assert_eq!(m.sum("nf_drops_total", &[]), 16.0);
        assert_eq!(m.sum("up", &[]), 1.0);
        assert_eq!(m.sum("weird", &[("a", "q\"uote")]), 2.5);
        assert_eq!(m.matching("drops").count(), 3);
    }
}
