//! `/ui/map`: the dependency map ([`analytics::dependencies`]) as an inline SVG laid out in
//! columns, and the same edges as a table. Every name goes through [`esc`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::super::TraceStore;
use super::super::analytics::{self, Dependencies, Edge, NodeKind, Range};
use super::html::{esc, foot, format_duration, head, top_bar};

/// A node's box, in SVG units.
const NODE_W: usize = 200;
const NODE_H: usize = 46;
/// Room between columns (for the edge labels) and between rows.
const COL_GAP: usize = 190;
const ROW_GAP: usize = 40;
const MARGIN: usize = 20;
/// Node names longer than this many characters are shortened in the boxes (the whole name
/// is in the box's tooltip and in the table).
const LABEL_CHARS: usize = 26;
/// Edges failing at least this often are drawn as failing.
const ERROR_HEAVY: f64 = 0.05;

/// `/ui/map`: the lookback selector, the map, the edge table.
pub(super) fn page(store: &TraceStore, query: &str, now: SystemTime) -> String {
    let range = Range::parse(query, now);
    let deps = analytics::dependencies(&range.traces(store), &range);
    let mut out = String::with_capacity(4096 + deps.edges.len() * 1024);
    head(&mut out, "map", false);
    top_bar(&mut out, store);
    out.push_str("<h1>Dependency map</h1>");
    lookback_form(&mut out, "/ui/map", query);
    if deps.edges.is_empty() {
        out.push_str(
            "<p class=\"empty\">No calls yet: the map shows calls between services and to \
             upstreams once traces are stored.</p>",
        );
        foot(&mut out);
        return out;
    }
    let _ = write!(
        out,
        "<p class=\"muted\">{} traces over {}; rates per second over that window. \
         <a href=\"/api/dependencies\">JSON</a></p>",
        deps.traces,
        format_duration(Duration::from_secs_f64(deps.window_seconds)),
    );
    svg(&mut out, &deps);
    table(&mut out, &deps);
    foot(&mut out);
    out
}

/// The `lookback` selector of the map and overview pages.
pub(super) fn lookback_form(out: &mut String, action: &str, query: &str) {
    let current = super::super::query::params(query)
        .find(|(name, _)| name == "lookback")
        .map(|(_, value)| value)
        .unwrap_or_default();
    let _ = write!(
        out,
        "<form class=\"filters\" method=\"get\" action=\"{action}\"><label>since \
         <select name=\"lookback\">"
    );
    for (value, label) in [
        ("", "all stored"),
        ("5m", "5 min"),
        ("15m", "15 min"),
        ("1h", "1 hour"),
        ("6h", "6 hours"),
    ] {
        let selected = if value == current { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{value}\"{selected}>{label}</option>");
    }
    out.push_str("</select></label><button type=\"submit\">Show</button></form>");
}

/// Where each node's box goes: its column is its rank, its row its place in the column.
fn positions(deps: &Dependencies) -> (Vec<(usize, usize)>, usize, usize) {
    let ranks = deps.ranks();
    let columns = ranks.iter().max().map_or(0, |r| r + 1);
    let mut rows = vec![0usize; columns];
    let mut at = Vec::with_capacity(ranks.len());
    for &rank in &ranks {
        let x = MARGIN + rank * (NODE_W + COL_GAP);
        let y = MARGIN + rows[rank] * (NODE_H + ROW_GAP);
        rows[rank] += 1;
        at.push((x, y));
    }
    let width = 2 * MARGIN + columns * NODE_W + columns.saturating_sub(1) * COL_GAP;
    let most = rows.iter().copied().max().unwrap_or(0);
    let height = 2 * MARGIN + most * NODE_H + most.saturating_sub(1) * ROW_GAP + ROW_GAP;
    (at, width, height)
}

fn svg(out: &mut String, deps: &Dependencies) {
    let (at, width, height) = positions(deps);
    let _ = write!(
        out,
        "<figure class=\"map\"><svg xmlns=\"http://www.w3.org/2000/svg\" class=\"map\" \
         width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         aria-label=\"dependency map\"><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" \
         refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\">\
         <path d=\"M0,0 L10,5 L0,10 z\" class=\"arrow\"/></marker></defs>"
    );
    let index = |name: &str| deps.nodes.iter().position(|n| n.name == name);
    for edge in &deps.edges {
        if let (Some(a), Some(b)) = (index(&edge.parent), index(&edge.child)) {
            if a != b {
                edge_path(out, edge, at[a], at[b]);
            }
        }
    }
    for (node, &(x, y)) in deps.nodes.iter().zip(&at) {
        let kind = match node.kind {
            NodeKind::Service => "service",
            NodeKind::Peer => "upstream",
        };
        let label: String = if node.name.chars().count() > LABEL_CHARS {
            let mut short: String = node.name.chars().take(LABEL_CHARS - 1).collect();
            short.push('…');
            short
        } else {
            node.name.clone()
        };
        let _ = write!(
            out,
            "<g class=\"node {kind}\" data-node=\"{name}\" data-kind=\"{kind}\"><title>{name}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"5\"/>\
             <text x=\"{tx}\" y=\"{ty}\" class=\"name\">{label}</text>\
             <text x=\"{tx}\" y=\"{ky}\" class=\"kind\">{kind}</text></g>",
            name = esc(&node.name),
            label = esc(&label),
            tx = x + 10,
            ty = y + 19,
            ky = y + 36,
        );
    }
    out.push_str("</svg></figure>");
}

/// One edge: a curve from the caller's right side to the called's left side (below both
/// boxes when the called is not to the right), and its label.
fn edge_path(out: &mut String, edge: &Edge, from: (usize, usize), to: (usize, usize)) {
    let (x1, y1) = ((from.0 + NODE_W) as f64, (from.1 + NODE_H / 2) as f64);
    let (x2, y2) = (to.0 as f64, (to.1 + NODE_H / 2) as f64);
    let (d, lx, ly) = if x2 > x1 {
        let c = (x2 - x1) / 2.0;
        (
            format!("M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}", x1 + c, x2 - c),
            (x1 + x2) / 2.0,
            (y1 + y2) / 2.0,
        )
    } else {
        // Back to an earlier column (a cycle) or within one: under the boxes.
        let (bx1, by1) = ((from.0 + NODE_W / 2) as f64, (from.1 + NODE_H) as f64);
        let (bx2, by2) = ((to.0 + NODE_W / 2) as f64, (to.1 + NODE_H) as f64);
        let low = by1.max(by2) + ROW_GAP as f64 * 0.8;
        (
            format!("M{bx1},{by1} C{bx1},{low} {bx2},{low} {bx2},{by2}"),
            (bx1 + bx2) / 2.0,
            low,
        )
    };
    let class = if edge.error_share >= ERROR_HEAVY {
        " failing"
    } else if edge.error_count > 0 {
        " some-errors"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<g class=\"edge{class}\" data-parent=\"{}\" data-child=\"{}\" data-calls=\"{}\">\
         <title>{} → {}</title><path d=\"{d}\" marker-end=\"url(#arrow)\"/>\
         <text><tspan x=\"{lx:.1}\" y=\"{:.1}\">{}</tspan><tspan x=\"{lx:.1}\" y=\"{:.1}\">{}\
         </tspan></text></g>",
        esc(&edge.parent),
        esc(&edge.child),
        edge.call_count,
        esc(&edge.parent),
        esc(&edge.child),
        ly - 5.0,
        calls_label(edge),
        ly + 13.0,
        quality_label(edge),
    );
}

/// `12 calls · 0.40/s` (above the edge).
fn calls_label(edge: &Edge) -> String {
    format!(
        "{} call{} · {}/s",
        edge.call_count,
        if edge.call_count == 1 { "" } else { "s" },
        format_rate(edge.rate_per_second),
    )
}

/// `8.3% err · p95 120.0 ms` (below the edge).
fn quality_label(edge: &Edge) -> String {
    format!(
        "{:.1}% err · p95 {}",
        edge.error_share * 100.0,
        format_ms(edge.p95_ms),
    )
}

fn table(out: &mut String, deps: &Dependencies) {
    out.push_str(
        "<h2>Calls</h2><table class=\"edges\"><thead><tr><th>Caller</th><th>Called</th>\
         <th class=\"num\">Calls</th><th class=\"num\">Rate /s</th><th class=\"num\">Errors</th>\
         <th class=\"num\">p50</th><th class=\"num\">p95</th></tr></thead><tbody>",
    );
    for edge in &deps.edges {
        let _ = write!(
            out,
            "<tr{}><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{} ({:.1}%)</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            if edge.error_share >= ERROR_HEAVY {
                " class=\"error\""
            } else {
                ""
            },
            esc(&edge.parent),
            esc(&edge.child),
            edge.call_count,
            format_rate(edge.rate_per_second),
            edge.error_count,
            edge.error_share * 100.0,
            format_ms(edge.p50_ms),
            format_ms(edge.p95_ms),
        );
    }
    out.push_str("</tbody></table>");
    if deps.other_edges > 0 {
        let _ = write!(
            out,
            "<p class=\"muted\">{} more edges with {} calls in all are not shown (at most {} \
             are).</p>",
            deps.other_edges,
            deps.other_calls,
            analytics::MAX_EDGES
        );
    }
}

/// `0.004`, `0.40`, `12.5`.
fn format_rate(rate: f64) -> String {
    if rate < 0.1 {
        format!("{rate:.3}")
    } else if rate < 10.0 {
        format!("{rate:.2}")
    } else {
        format!("{rate:.1}")
    }
}

fn format_ms(ms: f64) -> String {
    format_duration(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
}
