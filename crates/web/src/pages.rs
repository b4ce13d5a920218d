//! The pages, as small functions returning markup (maud), one per component. They take
//! what the API returned and the language; they never call anything.

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use maud::{html, Markup, DOCTYPE};

use crate::api::{DailyBalance, Entry, Merchant};
use crate::assets;
use crate::i18n::{Lang, Messages};
use crate::money;

/// What every page needs: the language and, when signed in, the form token.
pub struct View {
    pub lang: Lang,
    /// The CSRF token of the session; `None` before sign-in.
    pub csrf: Option<String>,
    /// The path of this page, for the language switch to come back to.
    pub path: String,
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
                            a href="/entries" { (m.entries) }
                            a href="/record" { (m.record) }
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

/// The sign-in page.
pub fn sign_in(view: &View, csrf: &str, username: &str, error: Option<&str>) -> Markup {
    let m = view.m();
    layout(
        view,
        m.sign_in,
        html! {
            h1 { (m.sign_in) }
            (flash(None, error))
            form.card method="post" action="/signin" {
                input type="hidden" name="csrf" value=(csrf);
                label for="username" { (m.username) }
                input #username name="username" type="text" autocomplete="username" required autofocus value=(username);
                label for="password" { (m.password) }
                input #password name="password" type="password" autocomplete="current-password" required;
                button.primary type="submit" { (m.sign_in) }
            }
        },
    )
}

/// The day's figures and latest entries; refetched whole by the page script on each live
/// event (`data-live` is the fragment's URL).
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
        section #today aria-labelledby="today-title" data-live="/today/panel" {
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
            div.today-grid { (panel) (record_form(view, form, false)) }
        },
    )
}

/// The record page ("save and add another" lands here).
pub fn record(view: &View, form: &RecordForm, notice: Option<&str>) -> Markup {
    let m = view.m();
    layout(view, m.record, html! { (flash(notice, None)) (record_form(view, form, true)) })
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
        (entry_table(view, books, entries, view.csrf.is_some()))
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
    layout(view, view.m().app_name, html! { (flash(None, Some(message))) p { a href="/" { (view.m().today) } } })
}
