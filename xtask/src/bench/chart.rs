//! The SVG chart: per row, our bar and Node's bar side by side, as a cost
//! against the raw OS limit (1 = the raw limit, more is worse), on a log axis.
//!
//! Drawn with plotters' SVG backend only: text is written as SVG `<text>`
//! elements and its size estimated, so no font file, fontconfig or freetype is
//! needed to build or to run.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::report::{Baseline, NodeCell, Row, format_number};

const OURS_COLOR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const NODE_COLOR: RGBColor = RGBColor(0xe3, 0x7b, 0x1c);

/// Which half of a row's band a bar takes.
#[derive(Clone, Copy)]
enum Half {
    Upper,
    Lower,
}

/// One chart row: its label and the costs of ours and Node's figures.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) ours: Option<f64>,
    pub(crate) node: Option<f64>,
}

/// The bars of the rows that have a baseline to be drawn against.
pub(crate) fn bars(rows: &[Row]) -> Vec<Bar> {
    rows.iter()
        .filter_map(|row| {
            let ours = row.ours.and_then(|m| row.cost(m.median));
            let node = match row.node {
                NodeCell::Measured(m) => row.cost(m.median),
                _ => None,
            };
            let baseline = ours.or(node)?.1;
            let mark = if baseline == Baseline::Target {
                " †"
            } else {
                ""
            };
            Some(Bar {
                label: format!("{}{mark}", row.id),
                ours: ours.map(|c| c.0),
                node: node.map(|c| c.0),
            })
        })
        .collect()
}

/// Writes the chart of `bars` to `path`.
pub(crate) fn write_svg(path: &Path, bars: &[Bar], title: &str) -> anyhow::Result<()> {
    let n = bars.len().max(1);
    let height = 140 + 40 * n as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    let plot_err = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("drawing the chart: {e}");
    root.fill(&WHITE).map_err(plot_err)?;

    let costs = bars.iter().flat_map(|b| [b.ours, b.node]).flatten();
    let (lo, hi) = costs.fold((1.0_f64, 1.0_f64), |(lo, hi), c| (lo.min(c), hi.max(c)));
    // Room on the right (a log axis) for the legend.
    let (lo, hi) = (lo.min(0.5) / 1.5, hi.max(2.0) * 8.0);

    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(44)
        .y_label_area_size(230)
        // A discrete range holds both ends: `0..n - 1` is n segments.
        .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())
        .map_err(plot_err)?;

    // The first row at the top: row i sits in segment n - 1 - i.
    let segment = |i: usize| n - 1 - i;
    let label_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(s) if *s < n => bars
            .get(n - 1 - *s)
            .map_or_else(String::new, |b| b.label.clone()),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label_of)
        .x_label_formatter(&|x| format!("{x}×"))
        .x_desc("times the raw OS limit (rows with †: times the target); 1 = at it, lower is better; log scale")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(plot_err)?;

    // Bars grow from 1 (the raw limit) towards their cost, both ways; ours
    // above Node's within a row's segment.
    let bar = |i: usize, cost: f64, half: Half, color: RGBColor| {
        let s = segment(i);
        let (from, to) = match half {
            Half::Upper => (SegmentValue::CenterOf(s), SegmentValue::Exact(s + 1)),
            Half::Lower => (SegmentValue::Exact(s), SegmentValue::CenterOf(s)),
        };
        let mut rect = Rectangle::new([(1.0, from), (cost, to)], color.filled());
        // Margins in pixels: top, bottom, left, right (y grows upwards here).
        let (outer, inner) = (7, 1);
        match half {
            Half::Upper => rect.set_margin(outer, inner, 0, 0),
            Half::Lower => rect.set_margin(inner, outer, 0, 0),
        };
        rect
    };
    let ours = bars
        .iter()
        .enumerate()
        .filter_map(|(i, b)| Some(bar(i, b.ours?, Half::Upper, OURS_COLOR)));
    chart
        .draw_series(ours)
        .map_err(plot_err)?
        .label("ours")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], OURS_COLOR.filled()));
    let node = bars
        .iter()
        .enumerate()
        .filter_map(|(i, b)| Some(bar(i, b.node?, Half::Lower, NODE_COLOR)));
    chart
        .draw_series(node)
        .map_err(plot_err)?
        .label("Node.js 20")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], NODE_COLOR.filled()));
    // Each bar's figure beside it, so that a bar at 1 is seen, not missed.
    let value_label = |i: usize, cost: f64, half: Half| {
        let dy = match half {
            Half::Upper => -15,
            Half::Lower => 2,
        };
        EmptyElement::at((cost.max(1.0), SegmentValue::CenterOf(segment(i))))
            + Text::new(
                format!("{}×", format_number(cost)),
                (5, dy),
                ("sans-serif", 11).into_font(),
            )
    };
    let labels = bars.iter().enumerate().flat_map(|(i, b)| {
        [
            b.ours.map(|c| value_label(i, c, Half::Upper)),
            b.node.map(|c| value_label(i, c, Half::Lower)),
        ]
        .into_iter()
        .flatten()
    });
    chart.draw_series(labels).map_err(plot_err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)],
            BLACK.stroke_width(2),
        )))
        .map_err(plot_err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
