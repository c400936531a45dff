//! Charts as server-rendered SVG: stacked bars of counts by outcome over time. No script, no
//! external file; the colours come from the stylesheet's `c-*` classes.

use maud::{html, Markup};

/// The outcome groups a bar is stacked from, bottom up, with their legend names.
pub const GROUPS: [(&str, &str); 4] = [
    ("c-sent", "sent"),
    ("c-deferred", "deferred / queued"),
    ("c-bounced", "bounced / failed"),
    ("c-other", "other"),
];

/// Which group an outcome or status counts in.
pub fn group(outcome: &str) -> usize {
    match outcome {
        "sent" | "complained" => 0,
        "deferred" | "queued" | "held" | "released" | "requeued" => 1,
        "bounced" | "expired" | "failed" | "purged" | "suppressed" | "partial" => 2,
        _ => 3,
    }
}

/// One bar: its label (shown under every `label_every`th bar) and its counts per group.
pub struct Bar {
    pub label: String,
    pub counts: [u64; 4],
}

struct Rect {
    bar: usize,
    group: usize,
    count: u64,
    x: f64,
    y: f64,
    h: f64,
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 220;
const LEFT: u32 = 44;
const BOTTOM: u32 = 22;
const TOP: u32 = 10;

/// A stacked bar chart of `bars`, left (oldest) to right; `title` for screen readers.
pub fn bars(title: &str, bars: &[Bar], label_every: usize) -> Markup {
    let max = bars
        .iter()
        .map(|b| b.counts.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = WIDTH - LEFT - 8;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = bars.len().max(1) as u32;
    let slot = plot_w as f64 / n as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let scale = plot_h as f64 / max as f64;
    let label_every = label_every.max(1);
    let left = |i: usize| LEFT as f64 + slot * i as f64 + (slot - bar_w) / 2.0;
    let mut rects = Vec::new();
    for (i, bar) in bars.iter().enumerate() {
        let mut y = (TOP + plot_h) as f64;
        for (g, &count) in bar.counts.iter().enumerate() {
            if count > 0 {
                let h = (count as f64 * scale).max(1.0);
                y -= h;
                rects.push(Rect {
                    bar: i,
                    group: g,
                    count,
                    x: left(i),
                    y,
                    h,
                });
            }
        }
    }
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" role="img"
            viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) preserveAspectRatio="xMidYMid meet" {
            title { (title) }
            line x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH - 8) y2=(TOP + plot_h) stroke="#b9c1cf" {}
            text x=(LEFT - 6) y=(TOP + 10) text-anchor="end" { (max) }
            text x=(LEFT - 6) y=(TOP + plot_h) text-anchor="end" { "0" }
            @for r in &rects {
                rect class=(GROUPS[r.group].0) x=(format!("{:.1}", r.x)) y=(format!("{:.1}", r.y))
                    width=(format!("{bar_w:.1}")) height=(format!("{:.1}", r.h)) {
                    title { (bars[r.bar].label) ": " (r.count) " " (GROUPS[r.group].1) }
                }
            }
            @for (i, bar) in bars.iter().enumerate() {
                @if i % label_every == 0 {
                    text x=(format!("{:.1}", left(i) + bar_w / 2.0)) y=(HEIGHT - 6) text-anchor="middle" { (bar.label) }
                }
            }
        }
    }
}

/// The legend under a chart.
pub fn legend() -> Markup {
    html! {
        p.legend {
            @for (class, name) in GROUPS {
                span { i class=(class) {} (name) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_escape_labels() {
        let svg = bars(
            "t",
            &[
                Bar {
                    label: "<b>".into(),
                    counts: [2, 0, 0, 0],
                },
                Bar {
                    label: "10:01".into(),
                    counts: [1, 1, 2, 0],
                },
            ],
            1,
        )
        .into_string();
        assert_eq!(svg.matches("<rect").count(), 4, "{svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
        assert!(
            svg.contains(">4</text>"),
            "the axis shows the highest bar: {svg}"
        );
        assert_eq!(group("sent"), 0);
        assert_eq!(group("expired"), 2);
    }
}
