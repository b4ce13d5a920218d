//! The pages, as small functions returning markup (maud), one per component. They take
//! what the API returned and the language; they never call anything.

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use maud::{html, Markup, DOCTYPE};

use crate::api::{DailyBalance, DayClose, Entry, Merchant};
use crate::assets;
use crate::chart::{self, ChartText, ReportDay};
use crate::i18n::{Lang, Messages};
use crate::money;
use crate::session::Can;

/// What every page needs: the language and, when signed in, the form token.
pub struct View {
    pub lang: Lang,
    /// The CSRF token of the session; `None` before sign-in.
    pub csrf: Option<String>,
    /// The path of this page, for the language switch to come back to.
    pub path: String,
    /// What the user's role allows: what the navigation and the page offer.
    pub can: Can,
    /// The signed-in user (the token's subject): whose offline entries this page may send.
    pub user: Option<String>,
    /// The live panel's polling interval in milliseconds, where events cannot be streamed.
    pub poll_ms: Option<u128>,
}

impl View {
    pub fn m(&self) -> &'static Messages {
        self.lang.messages()
    }
}

/// The merchant's formatting: currency, minor digits and time zone.
pub struct Books<'a> {
    pub merchant: &'a Merchant,
    pub tz: Tz,
}

impl Books<'_> {
    /// An amount as the API wrote it, formatted for `lang` (the API's text if unreadable).
    pub fn amount(&self, api_amount: &str, lang: Lang) -> String {
        match money::parse_api(api_amount, self.merchant.minor_digits) {
            Some(minor) => money::format(minor, &self.merchant.currency, self.merchant.minor_digits, lang),
            None => api_amount.to_owned(),
        }
    }

    /// An RFC 3339 instant in the merchant's time zone.
    pub fn instant(&self, rfc3339: &str, lang: Lang) -> String {
        match DateTime::parse_from_rfc3339(rfc3339) {
            Ok(t) => lang.date_time(t.with_timezone(&self.tz)),
            Err(_) => rfc3339.to_owned(),
        }
    }
}

/// The frame of every page.
pub fn layout(view: &View, title: &str, body: Markup) -> Markup {
    let m = view.m();
    html! {
        (DOCTYPE)
        html lang=(view.lang.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (m.app_name) }
                link rel="stylesheet" href=(assets::url("app.css"));
                link rel="icon" type="image/svg+xml" href=(assets::url("icon.svg"));
                link rel="manifest" href="/manifest.webmanifest";
                meta name="theme-color" content="#0b6e4f";
                script src=(assets::url("app.js")) defer {}
            }
            body {
                a.skip href="#main" { (title) }
                header.top {
                    span.brand { (m.app_name) }
                    @if view.csrf.is_some() {
                        nav aria-label=(m.app_name) {
                            a href="/" { (m.today) }
                            @if view.can.read_entries { a href="/entries" { (m.entries) } }
                            @if view.can.record { a href="/record" { (m.nav_record) } }
                            @if view.can.read_reports { a href="/reports" { (m.reports) } }
                            @if view.can.close_day { a href="/close" { (m.close_till) } }
                        }
                    }
                    a.lang href={ "/lang/" (m.switch_lang.tag()) "?next=" (crate::api::percent_encode(&view.path)) }
                        hreflang=(m.switch_lang.tag()) lang=(m.switch_lang.tag()) { (m.switch_to) }
                    @if let Some(csrf) = &view.csrf {
                        form.signout method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { (m.sign_out) }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A notice above the content (`role=status`) or an error (`role=alert`).
pub fn flash(notice: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        div #flash {
            @if let Some(text) = notice { p.notice role="status" { (text) } }
            @if let Some(text) = error { p.error role="alert" { (text) } }
        }
    }
}

/// What the sign-in page offers.
pub struct SignInOptions<'a> {
    /// The built-in issuer's username and password form.
    pub password: bool,
    /// The OpenID Provider's name, for its "Sign in with …" button.
    pub provider: Option<&'a str>,
}

/// The sign-in page: the provider's button (a link: it leaves for the provider's hosted UI)
/// and the password form, as configured.
pub fn sign_in(view: &View, csrf: &str, username: &str, error: Option<&str>, offers: &SignInOptions) -> Markup {
    let m = view.m();
    layout(
        view,
        m.sign_in,
        html! {
            h1 { (m.sign_in) }
            (flash(None, error))
            @if let Some(provider) = offers.provider {
                p.card { a.button.primary #oidc-sign-in href="/auth/start" { (m.sign_in_with) " " (provider) } }
            }
            @if offers.password {
                @if offers.provider.is_some() { h2 { (m.or_password) } }
                form.card method="post" action="/signin" {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="username" { (m.username) }
                    input #username name="username" type="text" autocomplete="username" required autofocus[offers.provider.is_none()] value=(username);
                    label for="password" { (m.password) }
                    input #password name="password" type="password" autocomplete="current-password" required;
                    button.primary type="submit" { (m.sign_in) }
                }
            }
        },
    )
}

/// A sign-in through the provider that did not end in a session: why, the detail the
/// administrator needs (the subject to link), and a way to try again.
pub fn sign_in_failed(view: &View, message: &str, detail: Option<&str>) -> Markup {
    let m = view.m();
    layout(
        view,
        m.sign_in,
        html! {
            h1 { (m.sign_in) }
            (flash(None, Some(message)))
            @if let Some(detail) = detail { p.card { code #oidc-detail { (detail) } } }
            p { a.button #try-again href="/signin" { (m.try_again) } }
        },
    )
}

/// A page that moves on to `to` by itself (`meta refresh`, no script) and offers the link.
///
/// Used where a redirect would not do: after the provider's callback, a redirect would still be
/// part of the provider's cross-site navigation, on which the browser does not send the new
/// `SameSite=Strict` session cookie; and after a sign-out form, whose redirect to the
/// provider's logout a `form-action 'self'` policy blocks.
pub fn moving_on(view: &View, title: &str, to: &str) -> Markup {
    let m = view.m();
    html! {
        (DOCTYPE)
        html lang=(view.lang.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content={ "0; url=" (to) };
                title { (title) " · " (m.app_name) }
                link rel="stylesheet" href=(assets::url("app.css"));
            }
            body {
                main #main {
                    h1 { (title) }
                    p { a #continue href=(to) { (m.continue_) } }
                }
            }
        }
    }
}

/// The day's figures and latest entries; refetched whole by the page script on each live
/// event (`data-live` is the fragment's URL), or every `data-poll` milliseconds where events
/// cannot be streamed.
pub fn today_panel(
    view: &View,
    books: &Books,
    date: NaiveDate,
    balance: Result<&DailyBalance, &str>,
    latest: Option<&[Entry]>,
) -> Markup {
    let m = view.m();
    let lang = view.lang;
    html! {
        section #today aria-labelledby="today-title" data-live="/today/panel" data-poll=[view.poll_ms] {
            h1 #today-title { (m.today) ", " (lang.date(date)) " " span.live-dot title=(m.live) aria-hidden="true" {} }
            @match balance {
                Ok(b) => {
                    dl.figures {
                        div { dt { (m.opening_balance) } dd #opening-balance { (books.amount(&b.opening_balance, lang)) } }
                        div.credit { dt { (m.credits) } dd #total-credits { (books.amount(&b.total_credits, lang)) } }
                        div.debit { dt { (m.debits) } dd #total-debits { (books.amount(&b.total_debits, lang)) } }
                        div.closing { dt { (m.closing_balance) } dd #closing-balance { (books.amount(&b.closing_balance, lang)) } }
                        div { dt { (m.entry_count) } dd #entry-count { (b.entry_count) } }
                    }
                    p.as-of { (m.as_of) ": " span #as-of { (books.instant(&b.as_of, lang)) } }
                }
                Err(why) => p.notice { (why) }
            }
            @if let Some(entries) = latest {
                h2 { (m.latest_entries) }
                (entry_table(view, books, entries, false))
            }
        }
    }
}

/// A table of entries; with `actions`, a reversal link on each entry that can be reversed.
pub fn entry_table(view: &View, books: &Books, entries: &[Entry], actions: bool) -> Markup {
    let m = view.m();
    let lang = view.lang;
    html! {
        @if entries.is_empty() {
            p.empty { (m.no_entries) }
        } @else {
            div.table-wrap { table.entries {
                thead { tr {
                    th scope="col" { (m.occurred_at) }
                    th scope="col" { (m.kind) }
                    th scope="col" { (m.description) }
                    th scope="col" { (m.category) }
                    th scope="col" .num { (m.amount) }
                    @if actions { th scope="col" { span.visually-hidden { (m.reverse) } } }
                } }
                tbody {
                    @for e in entries {
                        tr data-entry=(e.id) .(e.kind) {
                            td { (books.instant(&e.occurred_at, lang)) }
                            td { (kind_label(m, &e.kind)) }
                            td { (e.description) @if e.reversal_of.is_some() { " · " em { (m.reversal_of) } } }
                            td { (e.category.as_deref().unwrap_or("")) }
                            td.num { @if e.kind == "debit" { "−" } (books.amount(&e.amount, lang)) }
                            @if actions {
                                td { @if e.reversal_of.is_none() {
                                    a.reverse href={ "/entries/" (crate::api::percent_encode(&e.id)) "/reverse" } { (m.reverse) }
                                } }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn kind_label(m: &Messages, kind: &str) -> &'static str {
    if kind == "debit" {
        m.debit
    } else {
        m.credit
    }
}

/// What the record form shows: the values typed and the errors next to each field.
#[derive(Debug, Default, Clone)]
pub struct RecordForm {
    pub kind: String,
    pub amount: String,
    pub description: String,
    pub category: String,
    pub occurred_at: String,
    /// Made when the form is first shown; a double submit or a retry replays, never duplicates.
    pub idempotency_key: String,
    /// `(field, message)`; field `form` for errors of no single field.
    pub errors: Vec<(String, String)>,
}

impl RecordForm {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors.iter().find(|(f, _)| f == field).map(|(_, e)| e.as_str())
    }
}

/// The record form; `standalone` on its own page (the page's heading, focus on the amount).
pub fn record_form(view: &View, form: &RecordForm, standalone: bool) -> Markup {
    let m = view.m();
    let csrf = view.csrf.as_deref().unwrap_or_default();
    let (group, decimal) = view.lang.separators();
    let debit = form.kind == "debit";
    html! {
        form #record .card method="post" action="/entries" {
            @if standalone { h1 { (m.record) } } @else { h2 { (m.record) } }
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="idempotency_key" value=(form.idempotency_key);
            @if let Some(error) = form.error("form") { p.error role="alert" { (error) } }
            fieldset.kind {
                legend { (m.kind) }
                label { input type="radio" name="type" value="credit" checked[!debit]; " " (m.credit) }
                label { input type="radio" name="type" value="debit" checked[debit]; " " (m.debit) }
                (field_error(form.error("type"), "type"))
            }
            label for="amount" { (m.amount) }
            input #amount name="amount" type="text" inputmode="numeric" autocomplete="off" required
                placeholder=(money::format_plain(0, 2, view.lang)) value=(form.amount)
                data-keypad="2" data-group=(group) data-decimal=(decimal) autofocus[standalone]
                aria-invalid=[form.error("amount").map(|_| "true")] aria-describedby=[form.error("amount").map(|_| "amount-error")];
            (field_error(form.error("amount"), "amount"))
            label for="description" { (m.description) }
            input #description name="description" type="text" required maxlength="200" value=(form.description)
                aria-invalid=[form.error("description").map(|_| "true")] aria-describedby=[form.error("description").map(|_| "description-error")];
            (field_error(form.error("description"), "description"))
            label for="category" { (m.category) }
            input #category name="category" type="text" maxlength="64" value=(form.category)
                aria-invalid=[form.error("category").map(|_| "true")] aria-describedby=[form.error("category").map(|_| "category-error")];
            (field_error(form.error("category"), "category"))
            label for="occurred_at" { (m.occurred_at) }
            input #occurred_at name="occurred_at" type="datetime-local" value=(form.occurred_at)
                aria-invalid=[form.error("occurred_at").map(|_| "true")] aria-describedby={ "occurred_at-hint" @if form.error("occurred_at").is_some() { " occurred_at-error" } };
            small #occurred_at-hint { (m.occurred_at_hint) }
            (field_error(form.error("occurred_at"), "occurred_at"))
            div.actions {
                button.primary type="submit" name="then" value="today" { (m.submit_record) }
                button type="submit" name="then" value="another" { (m.submit_record_another) }
            }
        }
    }
}

fn field_error(error: Option<&str>, field: &str) -> Markup {
    html! { @if let Some(error) = error { p.field-error id={ (field) "-error" } { (error) } } }
}

/// The "today" page: the live panel and the record form.
pub fn today(view: &View, panel: Markup, form: &RecordForm, notice: Option<&str>) -> Markup {
    let m = view.m();
    layout(
        view,
        m.today,
        html! {
            (flash(notice, None))
            @if view.can.record { (outbox(view)) }
            div.today-grid { (panel) @if view.can.record { (record_form(view, form, false)) } }
        },
    )
}

/// The record page ("save and add another" lands here).
pub fn record(view: &View, form: &RecordForm, notice: Option<&str>) -> Markup {
    let m = view.m();
    layout(view, m.record, html! { (flash(notice, None)) (outbox(view)) (record_form(view, form, true)) })
}

/// The entries recorded on this device while offline, waiting to be sent: filled in by the
/// page script from the device's queue (hidden while the queue is empty), with the balance
/// they would make when the page shows one.
pub fn outbox(view: &View) -> Markup {
    let m = view.m();
    html! {
        section #outbox .card hidden aria-labelledby="outbox-title" data-owner=(view.user.as_deref().unwrap_or_default())
            data-queued=(m.offline_queued) {
            h2 #outbox-title { (m.pending) }
            ul #outbox-items {}
            p #provisional hidden { (m.provisional_balance) ": " strong #provisional-balance {} }
            p #outbox-expired .error hidden { a href="/signin" { (m.sign_in_to_send) } }
        }
    }
}

/// The query of the entries page.
pub struct EntriesQueryView {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub next_cursor: Option<String>,
}

/// Entries of a day or a range, one page at a time.
pub fn entries(
    view: &View,
    books: &Books,
    query: &EntriesQueryView,
    entries: &[Entry],
    notice: Option<&str>,
) -> Markup {
    let m = view.m();
    html! {
        (flash(notice, None))
        h1 { (m.entries) }
        form.filters method="get" action="/entries" {
            label for="from" { (m.from) }
            input #from name="from" type="date" value=(query.from);
            label for="to" { (m.to) }
            input #to name="to" type="date" value=(query.to);
            button type="submit" { (m.show) }
        }
        (entry_table(view, books, entries, view.csrf.is_some() && view.can.record))
        @if let Some(cursor) = &query.next_cursor {
            p.pager { a rel="next" href={ "/entries?from=" (query.from) "&to=" (query.to) "&cursor=" (crate::api::percent_encode(cursor)) } { (m.next_page) } }
        }
    }
}

/// The confirmation step of a reversal.
pub fn reverse_confirm(view: &View, books: &Books, entry: &Entry, error: Option<&str>) -> Markup {
    let m = view.m();
    let csrf = view.csrf.as_deref().unwrap_or_default();
    html! {
        h1 { (m.reverse) }
        (flash(None, error))
        p { (m.reverse_question) }
        (entry_table(view, books, std::slice::from_ref(entry), false))
        form.card method="post" action={ "/entries/" (crate::api::percent_encode(&entry.id)) "/reverse" } {
            input type="hidden" name="csrf" value=(csrf);
            div.actions {
                button.danger type="submit" { (m.reverse_confirm) }
                a href={ "/entries?date=" (entry.business_date) } { (m.cancel) }
            }
        }
    }
}

/// A page for an error that has no better place.
pub fn error(view: &View, message: &str) -> Markup {
    error_page(view, view.m().error_title, message)
}

fn error_page(view: &View, title: &str, message: &str) -> Markup {
    layout(view, title, html! { h1 { (title) } (flash(None, Some(message))) p { a href="/" { (view.m().today) } } })
}

/// A 403 page: the user's role does not allow this page.
pub fn forbidden(view: &View) -> Markup {
    error_page(view, view.m().forbidden_title, view.m().not_allowed)
}

/// The period of the reports page and the totals of its days.
pub struct ReportView<'a> {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: &'a [ReportDay],
    /// `None` when a total does not fit the range of an amount.
    pub credits: Option<i64>,
    pub debits: Option<i64>,
}

/// The reports page: the period form, the period's figures, the chart, the table of days and
/// the CSV export; `error` when the API refused the period.
pub fn reports(view: &View, books: &Books, report: &ReportView, error: Option<&str>) -> Markup {
    let m = view.m();
    let lang = view.lang;
    let money = |minor: i64| money::format(minor, &books.merchant.currency, books.merchant.minor_digits, lang);
    let total = |minor: Option<i64>| minor.map_or_else(|| "—".to_owned(), money);
    let export = format!("/reports/export?from={}&to={}", report.from, report.to);
    html! {
        h1 { (m.reports) }
        (flash(None, error))
        form.filters.period method="get" action="/reports" {
            div { label for="from" { (m.from) } input #from name="from" type="date" value=(report.from); }
            div { label for="to" { (m.to) } input #to name="to" type="date" value=(report.to); }
            button type="submit" { (m.show) }
        }
        @if let (Some(first), Some(last)) = (report.days.first(), report.days.last()) {
            section.report aria-labelledby="report-title" {
                h2 #report-title { (m.report_title) ": " (lang.date(report.from)) " – " (lang.date(report.to)) }
                dl.figures.four {
                    div { dt { (m.opening_balance) } dd #report-opening { (money(first.opening)) } }
                    div.credit { dt { (m.credits) } dd #report-credits { (total(report.credits)) } }
                    div.debit { dt { (m.debits) } dd #report-debits { (total(report.debits)) } }
                    div.closing { dt { (m.closing_balance) } dd #report-closing { (money(last.closing)) } }
                }
                figure.chart-box {
                    (chart::chart(report.days, &ChartText {
                        title: m.chart_title,
                        desc: format!(
                            "{} {} – {}. {}: {}. {}: {}. {}: {}. {}: {}.",
                            m.chart_desc, lang.date(report.from), lang.date(report.to),
                            m.opening_balance, money(first.opening),
                            m.credits, total(report.credits), m.debits, total(report.debits),
                            m.closing_balance, money(last.closing),
                        ),
                        amount: &money,
                        date: &|d: NaiveDate| lang.short_date(d),
                    }))
                    figcaption.legend aria-hidden="true" {
                        span.key.key-credit {} (m.credits) " "
                        span.key.key-debit {} (m.debits) " "
                        span.key.key-closing {} (m.closing_balance)
                    }
                }
                div.actions.report-actions {
                    a.button href=(export) download { (m.export_csv) }
                }
                h2 { (m.per_day) }
                div.table-wrap role="region" aria-label=(m.per_day) tabindex="0" { table.days {
                    thead { tr {
                        th scope="col" { (m.date) }
                        th scope="col" .num { (m.opening_balance) }
                        th scope="col" .num { (m.credits) }
                        th scope="col" .num { (m.debits) }
                        th scope="col" .num { (m.closing_balance) }
                        th scope="col" .num { (m.entry_count) }
                    } }
                    tbody {
                        @for d in report.days {
                            tr data-day=(d.date) {
                                th scope="row" { (lang.date(d.date)) }
                                td.num { (money(d.opening)) }
                                td.num.credit { (money(d.credits)) }
                                td.num.debit { (money(d.debits)) }
                                td.num { (money(d.closing)) }
                                td.num { (d.entry_count) }
                            }
                        }
                    }
                } }
            }
        }
    }
}

/// What the close form shows again after a refusal.
#[derive(Debug, Default, Clone)]
pub struct CloseForm {
    pub date: String,
    pub counted_cash: String,
    pub note: String,
    /// `(field, message)`; field `form` for errors of no single field.
    pub errors: Vec<(String, String)>,
}

impl CloseForm {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors.iter().find(|(f, _)| f == field).map(|(_, e)| e.as_str())
    }
}

/// "Fechar o caixa": the day, the cash counted in the drawer and a note.
pub fn close_form(view: &View, form: &CloseForm) -> Markup {
    let m = view.m();
    let csrf = view.csrf.as_deref().unwrap_or_default();
    let (group, decimal) = view.lang.separators();
    html! {
        h1 { (m.close_till) }
        form #close .card method="post" action="/close" {
            input type="hidden" name="csrf" value=(csrf);
            @if let Some(error) = form.error("form") { p.error role="alert" { (error) } }
            p.hint { (m.close_hint) }
            label for="date" { (m.date) }
            input #date name="date" type="date" required value=(form.date)
                aria-invalid=[form.error("date").map(|_| "true")] aria-describedby=[form.error("date").map(|_| "date-error")];
            (field_error(form.error("date"), "date"))
            label for="counted_cash" { (m.counted_cash) }
            input #counted_cash name="counted_cash" type="text" inputmode="numeric" autocomplete="off"
                placeholder=(money::format_plain(0, 2, view.lang)) value=(form.counted_cash)
                data-keypad="2" data-group=(group) data-decimal=(decimal)
                aria-invalid=[form.error("counted_cash").map(|_| "true")]
                aria-describedby={ "counted_cash-hint" @if form.error("counted_cash").is_some() { " counted_cash-error" } };
            small #counted_cash-hint { (m.counted_cash_hint) }
            (field_error(form.error("counted_cash"), "counted_cash"))
            label for="note" { (m.note) }
            input #note name="note" type="text" maxlength="500" value=(form.note)
                aria-invalid=[form.error("note").map(|_| "true")] aria-describedby=[form.error("note").map(|_| "note-error")];
            (field_error(form.error("note"), "note"))
            div.actions { button.primary type="submit" { (m.close_till) } }
        }
    }
}

/// The closed day: expected, counted and the difference ("quebra de caixa").
pub fn closed(view: &View, books: &Books, close: &DayClose) -> Markup {
    let m = view.m();
    let lang = view.lang;
    let amount = |text: &str| books.amount(text, lang);
    let difference = close.difference.as_deref().and_then(|d| money::parse_api(d, books.merchant.minor_digits));
    let tone = match difference {
        Some(d) if d < 0 => "debit",
        Some(d) if d > 0 => "credit",
        _ => "even",
    };
    html! {
        (flash(Some(m.till_closed), None))
        h1 { (m.close_till) ", " (NaiveDate::parse_from_str(&close.date, "%Y-%m-%d").map_or_else(|_| close.date.clone(), |d| lang.date(d))) }
        dl.figures.four #till {
            div { dt { (m.expected) } dd #expected { (amount(&close.expected_balance)) } }
            div { dt { (m.counted) } dd #counted { (close.counted_cash.as_deref().map_or_else(|| m.not_counted.to_owned(), amount)) } }
            div.(tone) { dt { (m.difference) } dd #difference { (close.difference.as_deref().map_or_else(|| "—".to_owned(), amount)) } }
            div { dt { (m.entry_count) } dd { (close.entry_count) } }
        }
        @if let Some(note) = &close.note { p { (m.note) ": " (note) } }
        p { a href="/" { (m.today) } }
    }
}
