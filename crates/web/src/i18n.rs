//! The page's languages: Brazilian Portuguese by default, English by `Accept-Language` or the
//! switch (a cookie). Every text is a field of [`Messages`], and each language is one value of
//! it, so a text missing in one language does not compile.

use cashflow_http::ProblemType;
use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;

/// A language of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Pt,
    En,
}

impl Lang {
    /// The BCP 47 tag, for `<html lang>` and the cookie.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Pt => "pt-BR",
            Lang::En => "en",
        }
    }

    /// A tag from the cookie or the switch.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        match tag.trim().to_ascii_lowercase().as_str() {
            "pt" | "pt-br" => Some(Lang::Pt),
            "en" | "en-us" | "en-gb" => Some(Lang::En),
            _ => None,
        }
    }

    /// The preferred language of an `Accept-Language` header: the first of Portuguese and
    /// English by quality, Portuguese when neither is asked for.
    pub fn negotiate(accept_language: Option<&str>) -> Lang {
        let Some(header) = accept_language else { return Lang::Pt };
        let mut best: Option<(f32, Lang)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts.find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok())).unwrap_or(1.0);
            let lang = match tag.split('-').next() {
                Some("pt") => Lang::Pt,
                Some("en") => Lang::En,
                _ => continue,
            };
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::Pt, |(_, lang)| lang)
    }

    /// The texts of this language.
    pub fn messages(self) -> &'static Messages {
        match self {
            Lang::Pt => &PT,
            Lang::En => &EN,
        }
    }

    /// A business date: `01/12/2026` in Portuguese; `1 Dec 2026` in English (no day/month doubt).
    pub fn date(self, date: NaiveDate) -> String {
        match self {
            Lang::Pt => date.format("%d/%m/%Y").to_string(),
            Lang::En => date.format("%-d %b %Y").to_string(),
        }
    }

    /// A date on the chart's axis: `01/12` in Portuguese, `1 Dec` in English.
    pub fn short_date(self, date: NaiveDate) -> String {
        match self {
            Lang::Pt => date.format("%d/%m").to_string(),
            Lang::En => date.format("%-d %b").to_string(),
        }
    }

    /// An instant in the merchant's time zone, to the minute.
    pub fn date_time(self, instant: DateTime<Tz>) -> String {
        format!("{} {}", self.date(instant.date_naive()), instant.format("%H:%M"))
    }

    /// The thousands and decimal separators, for the amount field's keypad script.
    pub fn separators(self) -> (&'static str, &'static str) {
        match self {
            Lang::Pt => (".", ","),
            Lang::En => (",", "."),
        }
    }
}

/// Every text the pages show, in one language.
pub struct Messages {
    pub app_name: &'static str,
    pub switch_to: &'static str,
    pub switch_lang: Lang,
    pub username: &'static str,
    pub password: &'static str,
    pub sign_in: &'static str,
    pub sign_out: &'static str,
    pub sign_in_failed: &'static str,
    pub session_expired: &'static str,
    pub form_expired: &'static str,
    pub today: &'static str,
    pub entries: &'static str,
    pub record: &'static str,
    pub kind: &'static str,
    pub credit: &'static str,
    pub debit: &'static str,
    pub amount: &'static str,
    pub description: &'static str,
    pub category: &'static str,
    pub occurred_at: &'static str,
    pub occurred_at_hint: &'static str,
    pub submit_record: &'static str,
    pub submit_record_another: &'static str,
    pub recorded: &'static str,
    pub reverse: &'static str,
    pub reverse_confirm: &'static str,
    pub reverse_question: &'static str,
    pub cancel: &'static str,
    pub reversed: &'static str,
    pub reversal_of: &'static str,
    pub opening_balance: &'static str,
    pub credits: &'static str,
    pub debits: &'static str,
    pub closing_balance: &'static str,
    pub entry_count: &'static str,
    pub as_of: &'static str,
    pub latest_entries: &'static str,
    pub no_entries: &'static str,
    pub date: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub show: &'static str,
    pub next_page: &'static str,
    pub export_csv: &'static str,
    pub live: &'static str,
    pub no_report_access: &'static str,
    pub balance_pending: &'static str,
    pub not_allowed: &'static str,
    pub unavailable: &'static str,
    pub not_found: &'static str,
    pub invalid_amount: &'static str,
    pub invalid_field: &'static str,
    pub already_reversed: &'static str,
    pub cannot_reverse_a_reversal: &'static str,
    pub occurred_in_future: &'static str,
    pub reports: &'static str,
    pub error_title: &'static str,
    pub forbidden_title: &'static str,
    pub nav_record: &'static str,
    pub report_title: &'static str,
    pub chart_title: &'static str,
    pub chart_desc: &'static str,
    pub per_day: &'static str,
    pub print: &'static str,
    pub close_till: &'static str,
    pub close_hint: &'static str,
    pub counted_cash: &'static str,
    pub counted_cash_hint: &'static str,
    pub note: &'static str,
    pub till_closed: &'static str,
    pub expected: &'static str,
    pub counted: &'static str,
    pub difference: &'static str,
    pub not_counted: &'static str,
    pub day_already_closed: &'static str,
    pub day_not_over: &'static str,
    pub day_closed: &'static str,
    pub invalid_range: &'static str,
    pub offline_queued: &'static str,
    pub pending: &'static str,
    pub provisional_balance: &'static str,
    pub sign_in_to_send: &'static str,
    /// "Sign in with" and the OpenID Provider's name.
    pub sign_in_with: &'static str,
    /// Above the password form when a provider is offered too.
    pub or_password: &'static str,
    pub oidc_state: &'static str,
    pub oidc_denied: &'static str,
    pub oidc_code: &'static str,
    pub oidc_tokens: &'static str,
    pub oidc_not_linked: &'static str,
    pub try_again: &'static str,
    pub continue_: &'static str,
    pub signed_in: &'static str,
    pub signing_out: &'static str,
}

impl Messages {
    /// The page's text for an API problem `type`: ours for the ones a merchant can cause, the
    /// API's own detail otherwise (the API is the one place that validates).
    pub fn problem(&self, kind: ProblemType) -> Option<&'static str> {
        Some(match kind {
            ProblemType::InvalidAmount | ProblemType::AmountTooLarge => self.invalid_amount,
            ProblemType::AlreadyReversed => self.already_reversed,
            ProblemType::CannotReverseAReversal => self.cannot_reverse_a_reversal,
            ProblemType::InvalidOccurredAt => self.occurred_in_future,
            ProblemType::InvalidGrant => self.sign_in_failed,
            ProblemType::NotFound => self.not_found,
            ProblemType::DayAlreadyClosed => self.day_already_closed,
            ProblemType::DayNotOver => self.day_not_over,
            ProblemType::DayClosed => self.day_closed,
            ProblemType::InvalidCountedCash => self.invalid_amount,
            ProblemType::InvalidDateRange | ProblemType::DateRangeTooLong | ProblemType::InvalidDate => {
                self.invalid_range
            }
            _ => return None,
        })
    }
}

/// Português do Brasil.
pub const PT: Messages = Messages {
    app_name: "Caixa",
    switch_to: "English",
    switch_lang: Lang::En,
    username: "Usuário",
    password: "Senha",
    sign_in: "Entrar",
    sign_out: "Sair",
    sign_in_failed: "Usuário ou senha incorretos.",
    session_expired: "Sua sessão expirou. Entre novamente.",
    form_expired: "O formulário expirou. Confira os dados e envie de novo.",
    today: "Hoje",
    entries: "Lançamentos",
    record: "Registrar lançamento",
    kind: "Tipo",
    credit: "Crédito",
    debit: "Débito",
    amount: "Valor",
    description: "Descrição",
    category: "Categoria",
    occurred_at: "Data e hora",
    occurred_at_hint: "Vazio: agora. Pode ser no passado.",
    submit_record: "Registrar",
    submit_record_another: "Registrar e adicionar outro",
    recorded: "Lançamento registrado.",
    reverse: "Estornar",
    reverse_confirm: "Confirmar estorno",
    reverse_question: "Estornar este lançamento? Será registrado um lançamento oposto de mesmo valor.",
    cancel: "Cancelar",
    reversed: "Lançamento estornado.",
    reversal_of: "Estorno",
    opening_balance: "Saldo inicial",
    credits: "Créditos",
    debits: "Débitos",
    closing_balance: "Saldo final",
    entry_count: "Lançamentos no dia",
    as_of: "Atualizado em",
    latest_entries: "Últimos lançamentos",
    no_entries: "Nenhum lançamento.",
    date: "Data",
    from: "De",
    to: "Até",
    show: "Mostrar",
    next_page: "Próxima página",
    export_csv: "Exportar CSV",
    live: "Ao vivo",
    no_report_access: "Seu perfil não permite ver o saldo.",
    balance_pending: "O saldo ainda está sendo preparado; tente de novo em instantes.",
    not_allowed: "Seu perfil não permite esta ação.",
    unavailable: "Serviço indisponível no momento. Tente de novo em instantes.",
    not_found: "Lançamento não encontrado.",
    invalid_amount: "Valor inválido: use por exemplo 1.234,56 (maior que zero).",
    invalid_field: "Valor inválido.",
    already_reversed: "Este lançamento já foi estornado.",
    cannot_reverse_a_reversal: "Um estorno não pode ser estornado.",
    occurred_in_future: "Data e hora inválidas: não pode ser no futuro.",
    reports: "Relatórios",
    error_title: "Não foi possível continuar",
    forbidden_title: "Sem permissão",
    nav_record: "Registrar",
    report_title: "Relatório do período",
    chart_title: "Créditos, débitos e saldo final por dia",
    chart_desc: "Barras: créditos e débitos de cada dia. Linha: saldo final de cada dia.",
    per_day: "Por dia",
    print: "Imprimir",
    close_till: "Fechar o caixa",
    close_hint: "Fecha este dia e todos os anteriores: depois disso não aceitam lançamentos.",
    counted_cash: "Dinheiro contado",
    counted_cash_hint: "O que há na gaveta agora. Vazio: não contado.",
    note: "Observação",
    till_closed: "Caixa fechado.",
    expected: "Esperado",
    counted: "Contado",
    difference: "Diferença (quebra de caixa)",
    not_counted: "Não contado",
    day_already_closed: "Este dia já está fechado.",
    day_not_over: "Não é possível fechar um dia que ainda não começou.",
    day_closed: "O dia deste lançamento já está fechado.",
    invalid_range: "Período inválido: a data inicial deve ser anterior à final, e no máximo 366 dias.",
    offline_queued: "Sem conexão: lançamento guardado no aparelho, será enviado ao voltar a conexão.",
    pending: "Pendentes de envio",
    provisional_balance: "Saldo provisório (com pendentes)",
    sign_in_to_send: "Sua sessão expirou: entre novamente para enviar os lançamentos pendentes.",
    sign_in_with: "Entrar com",
    or_password: "Ou com usuário e senha",
    oidc_state: "Não foi possível concluir a entrada: ela expirou ou foi iniciada em outro navegador. Tente de novo.",
    oidc_denied: "O provedor de identidade não autorizou a entrada.",
    oidc_code: "O código de entrada expirou ou já foi usado. Tente de novo.",
    oidc_tokens: "Não foi possível confirmar a sua identidade. Tente de novo.",
    oidc_not_linked: "Sua conta ainda não está ligada a um estabelecimento. Mostre esta mensagem ao administrador:",
    try_again: "Tentar de novo",
    continue_: "Continuar",
    signed_in: "Entrada concluída",
    signing_out: "Saindo também do provedor de identidade…",
};

/// English.
pub const EN: Messages = Messages {
    app_name: "Cash book",
    switch_to: "Português",
    switch_lang: Lang::Pt,
    username: "Username",
    password: "Password",
    sign_in: "Sign in",
    sign_out: "Sign out",
    sign_in_failed: "Wrong username or password.",
    session_expired: "Your session expired. Please sign in again.",
    form_expired: "The form expired. Check it and send it again.",
    today: "Today",
    entries: "Entries",
    record: "Record an entry",
    kind: "Type",
    credit: "Credit",
    debit: "Debit",
    amount: "Amount",
    description: "Description",
    category: "Category",
    occurred_at: "Date and time",
    occurred_at_hint: "Empty: now. May be in the past.",
    submit_record: "Record",
    submit_record_another: "Record and add another",
    recorded: "Entry recorded.",
    reverse: "Reverse",
    reverse_confirm: "Confirm reversal",
    reverse_question: "Reverse this entry? An opposite entry of the same amount will be recorded.",
    cancel: "Cancel",
    reversed: "Entry reversed.",
    reversal_of: "Reversal",
    opening_balance: "Opening balance",
    credits: "Credits",
    debits: "Debits",
    closing_balance: "Closing balance",
    entry_count: "Entries on the day",
    as_of: "Updated",
    latest_entries: "Latest entries",
    no_entries: "No entries.",
    date: "Date",
    from: "From",
    to: "To",
    show: "Show",
    next_page: "Next page",
    export_csv: "Export CSV",
    live: "Live",
    no_report_access: "Your role does not allow seeing the balance.",
    balance_pending: "The balance is still being prepared; try again shortly.",
    not_allowed: "Your role does not allow this.",
    unavailable: "The service is unavailable right now. Try again shortly.",
    not_found: "Entry not found.",
    invalid_amount: "Invalid amount: type for example 1,234.56 (more than zero).",
    invalid_field: "Invalid value.",
    already_reversed: "This entry has already been reversed.",
    cannot_reverse_a_reversal: "A reversal cannot be reversed.",
    occurred_in_future: "Invalid date and time: it cannot be in the future.",
    reports: "Reports",
    error_title: "Could not continue",
    forbidden_title: "Not allowed",
    nav_record: "Record",
    report_title: "Report for the period",
    chart_title: "Credits, debits and closing balance per day",
    chart_desc: "Bars: each day's credits and debits. Line: each day's closing balance.",
    per_day: "Per day",
    print: "Print",
    close_till: "Close the till",
    close_hint: "Closes this day and every earlier one: after that they take no entries.",
    counted_cash: "Cash counted",
    counted_cash_hint: "What is in the drawer now. Empty: not counted.",
    note: "Note",
    till_closed: "Till closed.",
    expected: "Expected",
    counted: "Counted",
    difference: "Difference (over/short)",
    not_counted: "Not counted",
    day_already_closed: "This day is already closed.",
    day_not_over: "A day that has not begun cannot be closed.",
    day_closed: "The day of this entry is already closed.",
    invalid_range: "Invalid period: the start must not be after the end, and at most 366 days.",
    offline_queued: "Offline: the entry is kept on this device and will be sent when back online.",
    pending: "Waiting to be sent",
    provisional_balance: "Provisional balance (with pending)",
    sign_in_to_send: "Your session expired: sign in again to send the pending entries.",
    sign_in_with: "Sign in with",
    or_password: "Or with a username and password",
    oidc_state: "The sign-in could not be completed: it expired or was started in another browser. Please try again.",
    oidc_denied: "The identity provider did not sign you in.",
    oidc_code: "The sign-in code expired or was already used. Please try again.",
    oidc_tokens: "Your identity could not be confirmed. Please try again.",
    oidc_not_linked: "Your account is not linked to a merchant yet. Show this message to your administrator:",
    try_again: "Try again",
    continue_: "Continue",
    signed_in: "Signed in",
    signing_out: "Signing out of the identity provider too…",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portuguese_is_the_default_and_english_is_chosen_by_accept_language() {
        assert_eq!(Lang::negotiate(None), Lang::Pt);
        assert_eq!(Lang::negotiate(Some("fr-FR, de")), Lang::Pt);
        assert_eq!(Lang::negotiate(Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(Lang::negotiate(Some("en;q=0.5, pt-BR;q=0.9")), Lang::Pt);
    }

    #[test]
    fn dates_are_day_first() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default();
        assert_eq!(Lang::Pt.date(date), "01/12/2026");
        assert_eq!(Lang::En.date(date), "1 Dec 2026");
    }
}
