//! The terminal UI: what the screen shows of a [`Store`] (drawn into a
//! ratatui `Frame`, so tests draw it on a `TestBackend`) and what the keys do.
//!
//! The screen is three parts: a status line (address, connection state,
//! events/s, series count and drops), a table of the series that match the
//! filter, one per row, and a footer (the filter being typed, or the keys).

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use crate::observe::state::{Entry, Series, Store};

/// The longest filter accepted, in characters; further keys are ignored.
pub(crate) const MAX_FILTER_CHARS: usize = 256;

/// Width of the column with rates, sparklines and quantiles.
const DETAIL_WIDTH: u16 = 32;

/// The eight heights of a sparkline point, lowest first.
const SPARK_LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The state of the connection, as the status line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Connecting,
    Connected,
    Reconnecting { retry_in: Duration, error: String },
}

/// What the caller should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Continue,
    Quit,
}

/// Everything on screen that is not the metrics: address, connection,
/// filter and scroll position.
#[derive(Debug, Clone)]
pub(crate) struct View {
    addr: String,
    status: Status,
    filter: String,
    editing_filter: bool,
    /// Index of the first row shown among the matching series.
    scroll: usize,
    /// Series rows that fit in the table at the last draw, for paging.
    page_rows: usize,
}

impl View {
    pub(crate) fn new(addr: impl Into<String>) -> View {
        View {
            addr: addr.into(),
            status: Status::Connecting,
            filter: String::new(),
            editing_filter: false,
            scroll: 0,
            page_rows: 1,
        }
    }

    pub(crate) fn set_status(&mut self, status: Status) {
        self.status = status;
    }

    #[cfg(test)]
    pub(crate) fn filter(&self) -> &str {
        &self.filter
    }

    #[cfg(test)]
    pub(crate) fn scroll(&self) -> usize {
        self.scroll
    }

    /// Applies one key: `q` or Ctrl-C quits (`q` types a `q` while the
    /// filter is being edited), `/` starts a new filter, Enter keeps it,
    /// Esc clears it, arrows, PageUp/PageDown and Home/End scroll.
    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Continue;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c' | 'C')) {
            return Action::Quit;
        }
        let page = self.page_rows.max(1);
        match key.code {
            KeyCode::Up => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Down => self.scroll = self.scroll.saturating_add(1),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(page),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(page),
            KeyCode::Home => self.scroll = 0,
            // Clamped to the last page when drawn.
            KeyCode::End => self.scroll = usize::MAX,
            KeyCode::Esc => {
                self.filter.clear();
                self.editing_filter = false;
                self.scroll = 0;
            }
            KeyCode::Enter if self.editing_filter => self.editing_filter = false,
            KeyCode::Backspace if self.editing_filter => {
                self.filter.pop();
                self.scroll = 0;
            }
            KeyCode::Char(c) if self.editing_filter && !ctrl => self.type_char(c),
            KeyCode::Char('q') if !ctrl => return Action::Quit,
            KeyCode::Char('/') => {
                self.filter.clear();
                self.editing_filter = true;
                self.scroll = 0;
            }
            _ => {}
        }
        Action::Continue
    }

    /// Adds `c` to the filter being typed, unless it is full.
    fn type_char(&mut self, c: char) {
        if self.filter.chars().count() < MAX_FILTER_CHARS {
            self.filter.push(c);
            self.scroll = 0;
        }
    }
}

/// Draws the whole screen.
pub(crate) fn draw(frame: &mut Frame<'_>, store: &Store, view: &mut View) {
    let [status_area, table_area, footer_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let n_matching = store.matching(&view.filter).count();
    // One line of the table is its header.
    view.page_rows = usize::from(table_area.height.saturating_sub(1)).max(1);
    view.scroll = view.scroll.min(n_matching.saturating_sub(view.page_rows));

    frame.render_widget(status_line(store, view), status_area);
    draw_table(frame, table_area, store, view, n_matching);
    draw_footer(frame, footer_area, store, view, n_matching);
}

fn status_line<'a>(store: &Store, view: &'a View) -> Paragraph<'a> {
    let separator = || Span::raw(" │ ");
    let (state, color) = match &view.status {
        Status::Connecting => ("connecting".to_owned(), Color::Yellow),
        Status::Connected => ("connected".to_owned(), Color::Green),
        Status::Reconnecting { retry_in, .. } => (
            format!("reconnecting (backoff {:.1} s)", retry_in.as_secs_f64()),
            Color::Red,
        ),
    };
    let events_per_second = match store.events_per_second() {
        Some(rate) => format!("{} events/s", format_number(rate.round())),
        None => "- events/s".to_owned(),
    };
    let mut spans = vec![
        Span::styled(
            " tether observe ",
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(view.addr.as_str()),
        separator(),
        Span::styled(state, Style::new().fg(color)),
        separator(),
        Span::raw(events_per_second),
        separator(),
        Span::raw(format!("{} series", store.n_series())),
    ];
    if store.n_skipped() > 0 {
        spans.push(separator());
        spans.push(Span::raw(format!(
            "{} events of unknown kinds skipped",
            store.n_skipped()
        )));
    }
    if store.type_changes() > 0 {
        spans.push(separator());
        spans.push(Span::raw(format!(
            "{} events changing a metric's type dropped",
            store.type_changes()
        )));
    }
    let dropped = store.dropped();
    if dropped.series() > 0 || dropped.metadata > 0 {
        let plus = if dropped.series_saturated { "+" } else { "" };
        spans.push(separator());
        spans.push(Span::styled(
            format!(
                "cap {} reached: {}{plus} series dropped",
                store.limits().max_series,
                dropped.series()
            ),
            Style::new().fg(Color::Red),
        ));
    }
    // The reason comes last: it can be long, and the counts matter more.
    if let Status::Reconnecting { error, .. } = &view.status {
        spans.push(separator());
        spans.push(Span::styled(printable(error), Style::new().fg(Color::Red)));
    }
    Paragraph::new(Line::from(spans)).style(Style::new().add_modifier(Modifier::REVERSED))
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, store: &Store, view: &View, n_matching: usize) {
    if n_matching == 0 {
        let message = if store.n_series() > 0 {
            format!("no series name contains \"{}\"", view.filter)
        } else if view.status == Status::Connected {
            format!("connected to {}; waiting for metric events", view.addr)
        } else {
            format!("no metrics yet: not connected to {}", view.addr)
        };
        frame.render_widget(
            Paragraph::new(message).style(Style::new().fg(Color::DarkGray)),
            area,
        );
        return;
    }
    let mut series_width = 0;
    let rows: Vec<Row<'_>> = store
        .matching(&view.filter)
        .skip(view.scroll)
        .take(view.page_rows)
        .map(|entry| {
            let name = printable(&entry.key.to_string());
            series_width = series_width.max(name.chars().count());
            series_row(name, &entry)
        })
        .collect();
    // The series column is as wide as its longest row shown, up to three
    // fifths of the screen; the description takes what is left.
    let series_width = u16::try_from(series_width)
        .unwrap_or(u16::MAX)
        .max(6)
        .min(area.width.saturating_mul(3) / 5);
    let header = Row::new([
        "SERIES",
        "KIND",
        "VALUE",
        "RATE · RECENT · QUANTILES",
        "UNIT",
        "DESCRIPTION",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let widths = [
        Constraint::Length(series_width),
        Constraint::Length(9),
        Constraint::Length(14),
        Constraint::Length(DETAIL_WIDTH),
        Constraint::Length(8),
        Constraint::Fill(1),
    ];
    frame.render_widget(Table::new(rows, widths).header(header), area);
}

fn series_row<'a>(name: String, entry: &Entry<'_>) -> Row<'a> {
    let (value, detail) = match &entry.series {
        Series::Counter(counter) => (
            counter.total.to_string(),
            match counter.rate() {
                Some(rate) => format!("{}/s", format_rate(rate)),
                None => "-/s".to_owned(),
            },
        ),
        Series::Gauge(gauge) => (
            format_number(gauge.value),
            sparkline(gauge.history().iter().copied(), usize::from(DETAIL_WIDTH)),
        ),
        Series::Histogram(histogram) => {
            let summary = histogram.summary();
            let show = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), format_number);
            (
                format!("n={}", summary.count),
                format!(
                    "p50 {}  p99 {}  max {}",
                    show(summary.p50),
                    show(summary.p99),
                    show(summary.max)
                ),
            )
        }
    };
    let metadata = entry.metadata;
    let unit = printable(
        metadata
            .and_then(|metadata| metadata.unit.as_deref())
            .unwrap_or(""),
    );
    let description = printable(
        metadata
            .and_then(|metadata| metadata.help.as_deref())
            .unwrap_or(""),
    );
    Row::new([
        Cell::from(name),
        Cell::from(entry.series.kind().as_str()),
        Cell::from(value),
        Cell::from(detail),
        Cell::from(unit),
        Cell::from(description),
    ])
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, store: &Store, view: &View, n_matching: usize) {
    let position = if n_matching == 0 {
        String::new()
    } else {
        let first = view.scroll + 1;
        let last = (view.scroll + view.page_rows).min(n_matching);
        format!(" · rows {first}-{last} of {n_matching}")
    };
    let key_style = Style::new().add_modifier(Modifier::BOLD);
    let line = if view.editing_filter {
        let prompt = format!("/{}", view.filter);
        // The cursor stands after the text typed so far.
        let cursor_x = area
            .x
            .saturating_add(u16::try_from(prompt.chars().count()).unwrap_or(u16::MAX));
        if cursor_x < area.right() {
            frame.set_cursor_position((cursor_x, area.y));
        }
        Line::from(vec![
            Span::styled(prompt, key_style),
            Span::raw(format!("   Enter keeps · Esc clears{position}")),
        ])
    } else if !view.filter.is_empty() {
        Line::from(vec![
            Span::styled(format!("filter: {}", view.filter), key_style),
            Span::raw(format!(
                " · {n_matching} of {} series · Esc clears · / new filter{position}",
                store.n_series()
            )),
        ])
    } else {
        Line::from(vec![
            Span::styled("q", key_style),
            Span::raw(" quit · "),
            Span::styled("/", key_style),
            Span::raw(" filter · "),
            Span::styled("↑↓ PgUp PgDn", key_style),
            Span::raw(format!(" scroll{position}")),
        ])
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// `text` safe to put on a terminal: what the server sends could hold
/// escape sequences. Tabs and line breaks become spaces, other control
/// characters U+FFFD.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// A value for a person: integers without a fraction, others to four
/// decimals without trailing zeros, very large or small ones in `e`
/// notation.
pub(crate) fn format_number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let magnitude = value.abs();
    if magnitude >= 1e15 || (magnitude < 1e-4 && magnitude > 0.0) {
        return format!("{value:.3e}");
    }
    if value == 0.0 {
        // Negative zero too.
        return "0".to_owned();
    }
    if value.fract() == 0.0 {
        return format!("{value:.0}");
    }
    let fixed = format!("{value:.4}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    if trimmed == "-0" {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// A rate to three significant digits or so: `1234/s`, `12.3/s`, `0.25/s`.
pub(crate) fn format_rate(rate: f64) -> String {
    let magnitude = rate.abs();
    if !rate.is_finite() || magnitude >= 1e15 {
        return format_number(rate);
    }
    let decimals = if magnitude >= 100.0 {
        0
    } else if magnitude >= 1.0 {
        1
    } else {
        2
    };
    let fixed = format!("{rate:.decimals$}");
    if fixed.contains('.') {
        fixed.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        fixed
    }
}

/// The last `width` values as block characters scaled from their minimum
/// to their maximum; a flat line at the bottom when they are all equal,
/// a space for a value that is not finite.
pub(crate) fn sparkline(values: impl DoubleEndedIterator<Item = f64>, width: usize) -> String {
    let mut last: Vec<f64> = values.rev().take(width).collect();
    last.reverse();
    let finite = || last.iter().copied().filter(|value| value.is_finite());
    let min = finite().fold(f64::INFINITY, f64::min);
    let max = finite().fold(f64::NEG_INFINITY, f64::max);
    let top = SPARK_LEVELS.len() - 1;
    last.iter()
        .map(|&value| {
            if !value.is_finite() {
                return ' ';
            }
            if max <= min {
                return SPARK_LEVELS[0];
            }
            let share = (value - min) / (max - min);
            // `share` is within 0..=1, so the level is within 0..=top;
            // `min` keeps it there whatever rounding does.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a level from 0 to 7"
            )]
            let level = (share * top as f64).round() as usize;
            SPARK_LEVELS[level.min(top)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use tether_proto::{EventMetricType, Operation};

    use super::*;
    use crate::observe::state::Limits;
    use crate::observe::test_events::{metadata, metric};

    /// The screen as lines of text, trailing spaces removed.
    fn screen(store: &Store, view: &mut View, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
        terminal
            .draw(|frame| draw(frame, store, view))
            .expect("drawing on a test backend");
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
                line.trim_end().to_owned()
            })
            .collect()
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn type_keys(view: &mut View, text: &str) {
        for c in text.chars() {
            assert_eq!(view.on_key(key(KeyCode::Char(c))), Action::Continue);
        }
    }

    /// A store with one series of each kind, ticked twice one second apart.
    fn sample_store() -> Store {
        let mut store = Store::new(Limits::default());
        let t0 = Instant::now();
        for event in [
            metadata(
                "http_requests_total",
                EventMetricType::Counter,
                "count",
                "Requests served.",
            ),
            metadata("queue_depth", EventMetricType::Gauge, "", "Jobs waiting."),
            metadata(
                "latency_seconds",
                EventMetricType::Histogram,
                "seconds",
                "Time to answer.",
            ),
            metric(
                "http_requests_total",
                &[("code", "200")],
                Operation::SetCounter(1000),
            ),
            metric("queue_depth", &[], Operation::SetGauge(1.0)),
        ] {
            store.apply(event);
        }
        store.tick(t0);
        for event in [
            metric(
                "http_requests_total",
                &[("code", "200")],
                Operation::IncrementCounter(25),
            ),
            metric("queue_depth", &[], Operation::SetGauge(8.0)),
            metric("latency_seconds", &[], Operation::RecordHistogram(0.25)),
            metric("latency_seconds", &[], Operation::RecordHistogram(0.5)),
            metric("latency_seconds", &[], Operation::RecordHistogram(2.0)),
        ] {
            store.apply(event);
        }
        store.tick(t0 + Duration::from_secs(1));
        store
    }

    fn row<'a>(lines: &'a [String], name: &str) -> &'a str {
        lines
            .iter()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{}", lines.join("\n")))
    }

    #[test]
    fn the_screen_shows_each_kind_with_its_values_units_and_descriptions() {
        let store = sample_store();
        let mut view = View::new("127.0.0.1:5000");
        view.set_status(Status::Connected);
        let lines = screen(&store, &mut view, 160, 8);
        let text = lines.join("\n");

        assert!(
            lines[0].contains("tether observe 127.0.0.1:5000 │ connected │ 5 events/s │ 3 series"),
            "{text}"
        );
        assert!(lines[1].starts_with("SERIES"), "{text}");
        assert!(lines[1].contains("DESCRIPTION"), "{text}");

        let counter = row(&lines, "http_requests_total{code=\"200\"}");
        for part in ["counter", "1025", "25/s", "count", "Requests served."] {
            assert!(counter.contains(part), "{part} in {counter}");
        }
        let gauge = row(&lines, "queue_depth");
        for part in ["gauge", "8", "▁█", "Jobs waiting."] {
            assert!(gauge.contains(part), "{part} in {gauge}");
        }
        let histogram = row(&lines, "latency_seconds");
        for part in [
            "histogram",
            "n=3",
            "p50 0.5  p99 2  max 2",
            "seconds",
            "Time to answer.",
        ] {
            assert!(histogram.contains(part), "{part} in {histogram}");
        }
        // Sorted by name.
        let order: Vec<usize> = ["http_requests_total", "latency_seconds", "queue_depth"]
            .iter()
            .map(|name| {
                lines
                    .iter()
                    .position(|line| line.starts_with(name))
                    .unwrap_or(usize::MAX)
            })
            .collect();
        assert!(order.is_sorted(), "{text}");
        assert!(
            lines[7].starts_with("q quit · / filter · ↑↓ PgUp PgDn scroll · rows 1-3 of 3"),
            "{text}"
        );
    }

    #[test]
    fn the_filter_line_shows_what_is_typed_and_esc_clears_it() {
        let store = sample_store();
        let mut view = View::new("127.0.0.1:5000");
        view.set_status(Status::Connected);

        assert_eq!(view.on_key(key(KeyCode::Char('/'))), Action::Continue);
        type_keys(&mut view, "LATq");
        let lines = screen(&store, &mut view, 160, 8);
        let text = lines.join("\n");
        assert!(
            lines[7].starts_with("/LATq   Enter keeps · Esc clears"),
            "{text}"
        );
        // `q` was text, not quit; no name contains "latq".
        assert!(
            lines[1].contains("no series name contains \"LATq\""),
            "{text}"
        );

        view.on_key(key(KeyCode::Backspace));
        view.on_key(key(KeyCode::Enter));
        let lines = screen(&store, &mut view, 160, 8);
        let text = lines.join("\n");
        assert!(
            lines[7].starts_with(
                "filter: LAT · 1 of 3 series · Esc clears · / new filter · rows 1-1 of 1"
            ),
            "{text}"
        );
        assert!(lines[2].starts_with("latency_seconds"), "{text}");
        assert!(!text.contains("queue_depth"), "{text}");

        view.on_key(key(KeyCode::Esc));
        assert_eq!(view.filter(), "");
        let lines = screen(&store, &mut view, 160, 8);
        assert!(lines.iter().any(|line| line.starts_with("queue_depth")));
        // Outside the filter, q quits; Ctrl-C quits while typing too.
        assert_eq!(view.on_key(key(KeyCode::Char('q'))), Action::Quit);
        view.on_key(key(KeyCode::Char('/')));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(view.on_key(ctrl_c), Action::Quit);
    }

    #[test]
    fn the_status_line_shows_reconnecting_and_dropped_series() {
        let limits = Limits {
            max_series: 2,
            ..Limits::default()
        };
        let mut store = Store::new(limits);
        for id in ["a", "b", "c", "d"] {
            store.apply(metric(
                "flood",
                &[("id", id)],
                Operation::IncrementCounter(1),
            ));
        }
        let mut view = View::new("example:5000");
        view.set_status(Status::Reconnecting {
            retry_in: Duration::from_millis(1600),
            error: "cannot connect to example:5000: connection refused".to_owned(),
        });
        let lines = screen(&store, &mut view, 200, 6);
        assert!(
            lines[0].contains(
                "example:5000 │ reconnecting (backoff 1.6 s) │ - events/s │ 2 series │ cap 2 reached: 2 series dropped │ cannot connect to example:5000: connection refused"
            ),
            "{}",
            lines.join("\n")
        );
    }

    #[test]
    fn the_status_line_counts_operations_that_changed_a_type() {
        let mut store = Store::new(Limits::default());
        store.apply(metric("m", &[], Operation::IncrementCounter(1)));
        store.apply(metric("m", &[], Operation::SetGauge(1.0)));
        let mut view = View::new("a:1");
        view.set_status(Status::Connected);
        let lines = screen(&store, &mut view, 160, 4);
        assert!(
            lines[0].contains("│ 1 series │ 1 events changing a metric's type dropped"),
            "{}",
            lines.join("\n")
        );
        // The series keeps its first kind.
        assert!(lines[2].contains("counter"), "{}", lines.join("\n"));
    }

    #[test]
    fn an_empty_store_says_what_it_waits_for() {
        let store = Store::new(Limits::default());
        let mut view = View::new("127.0.0.1:5000");
        let lines = screen(&store, &mut view, 80, 4);
        assert!(lines[0].contains("connecting"), "{lines:?}");
        assert_eq!(lines[1], "no metrics yet: not connected to 127.0.0.1:5000");
        assert_eq!(lines[3], "q quit · / filter · ↑↓ PgUp PgDn scroll");
        view.set_status(Status::Connected);
        let lines = screen(&store, &mut view, 80, 4);
        assert_eq!(
            lines[1],
            "connected to 127.0.0.1:5000; waiting for metric events"
        );
    }

    #[test]
    fn keys_scroll_by_line_and_page_within_bounds() {
        let mut store = Store::new(Limits::default());
        for i in 0..50 {
            store.apply(metric(
                &format!("m{i:02}"),
                &[],
                Operation::SetGauge(f64::from(i)),
            ));
        }
        let mut view = View::new("a:1");
        // 10 lines: status, header, 7 rows, footer.
        let lines = screen(&store, &mut view, 100, 10);
        assert!(lines[2].starts_with("m00"), "{lines:?}");
        assert!(lines[9].ends_with("rows 1-7 of 50"), "{lines:?}");

        view.on_key(key(KeyCode::Down));
        view.on_key(key(KeyCode::Down));
        view.on_key(key(KeyCode::Up));
        let lines = screen(&store, &mut view, 100, 10);
        assert!(lines[2].starts_with("m01"), "{lines:?}");

        view.on_key(key(KeyCode::PageDown));
        let lines = screen(&store, &mut view, 100, 10);
        assert!(lines[2].starts_with("m08"), "{lines:?}");
        assert!(lines[9].ends_with("rows 9-15 of 50"), "{lines:?}");

        // Past the end, the last page stays in view.
        for _ in 0..20 {
            view.on_key(key(KeyCode::PageDown));
        }
        let lines = screen(&store, &mut view, 100, 10);
        assert!(lines[2].starts_with("m43"), "{lines:?}");
        assert!(lines[8].starts_with("m49"), "{lines:?}");
        assert_eq!(view.scroll(), 43);

        view.on_key(key(KeyCode::PageUp));
        screen(&store, &mut view, 100, 10);
        assert_eq!(view.scroll(), 36);
        view.on_key(key(KeyCode::Home));
        view.on_key(key(KeyCode::Up));
        screen(&store, &mut view, 100, 10);
        assert_eq!(view.scroll(), 0);
        view.on_key(key(KeyCode::End));
        screen(&store, &mut view, 100, 10);
        assert_eq!(view.scroll(), 43);
    }

    #[test]
    fn a_tiny_terminal_does_not_panic() {
        let store = sample_store();
        for (width, height) in [(1, 1), (5, 2), (20, 3), (0, 0)] {
            let mut view = View::new("127.0.0.1:5000");
            view.on_key(key(KeyCode::Char('/')));
            type_keys(&mut view, "a long filter that does not fit");
            let _ = screen(&store, &mut view, width, height);
        }
    }

    #[test]
    fn the_filter_length_is_bounded() {
        let mut view = View::new("a:1");
        view.on_key(key(KeyCode::Char('/')));
        type_keys(&mut view, &"x".repeat(MAX_FILTER_CHARS + 10));
        assert_eq!(view.filter().len(), MAX_FILTER_CHARS);
    }

    #[test]
    fn numbers_are_formatted_for_people() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (3.0, "3"),
            (-42.0, "-42"),
            (2.5, "2.5"),
            (0.1 + 0.2, "0.3"),
            (1.0 / 3.0, "0.3333"),
            (-0.00001, "-1.000e-5"),
            (1e20, "1.000e20"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_number(value), expected, "{value}");
        }
    }

    #[test]
    fn control_characters_from_the_server_never_reach_the_terminal() {
        assert_eq!(
            printable("a\u{1b}[2Jb\nc\td\u{7}"),
            "a\u{fffd}[2Jb c d\u{fffd}"
        );
        let mut store = Store::new(Limits::default());
        store.apply(metadata(
            "evil\u{1b}]0;x\u{7}",
            EventMetricType::Gauge,
            "\u{1b}[31m",
            "a\u{1b}[2Jb",
        ));
        store.apply(metric(
            "evil\u{1b}]0;x\u{7}",
            &[("l", "\u{1b}c")],
            Operation::SetGauge(1.0),
        ));
        let mut view = View::new("a:1");
        let lines = screen(&store, &mut view, 120, 4);
        let text = lines.join("\n");
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(!text.contains('\u{7}'), "{text:?}");
        assert!(
            lines[2].starts_with("evil\u{fffd}]0;x\u{fffd}{l=\"\u{fffd}c\"}"),
            "{text:?}"
        );
    }

    #[test]
    fn rates_show_about_three_digits() {
        let cases = [
            (0.0, "0"),
            (0.25, "0.25"),
            (0.001, "0"),
            (12.34, "12.3"),
            (25.0, "25"),
            (142.1737, "142"),
            (123_456.7, "123457"),
        ];
        for (rate, expected) in cases {
            assert_eq!(format_rate(rate), expected, "{rate}");
        }
    }

    #[test]
    fn sparklines_scale_between_min_and_max() {
        assert_eq!(sparkline([0.0, 7.0, 3.5].into_iter(), 10), "▁█▅");
        assert_eq!(sparkline([1.0, 1.0].into_iter(), 10), "▁▁");
        assert_eq!(sparkline([f64::NAN, 1.0, 2.0].into_iter(), 10), " ▁█");
        // The newest points are kept when there are more than fit.
        assert_eq!(sparkline([9.0, 0.0, 1.0].into_iter(), 2), "▁█");
        assert_eq!(sparkline(std::iter::empty(), 10), "");
    }
}
