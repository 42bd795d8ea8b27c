//! The built-in credential rules, as data.
//!
//! Hazard: a rule that matches ordinary text teaches operators to ignore findings; a rule
//! that misses a format leaks that format. Every rule names the keywords that must occur
//! for it to run (the prefilter), an anchored regex whose `s` group is the secret, and
//! where the format allows it a validator (checksum) or an entropy floor. Every rule has
//! a true-positive and a near-miss example that the tests generate fake values from.
//!
//! Example templates: `{a:N}` alphanumeric, `{l:N}` lowercase alphanumeric, `{u:N}`
//! uppercase alphanumeric, `{h:N}` lowercase hex, `{d:N}` digits, `{w:N}` `[A-Za-z0-9_-]`,
//! `{b:N}` base64 alphabet.

/// A checksum or structural check a match must also pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Validator {
    /// No extra check.
    #[default]
    None,
    /// Luhn mod-10 over the digits (payment cards).
    Luhn,
    /// ISO 13616 mod-97 (IBAN).
    Iban,
    /// Three base64url segments whose first decodes to a JSON object with `alg` (JWT).
    Jwt,
}

/// A rule as data: the built-in ones converted, or one an operator wrote in the
/// manifest (`dlp.rules`). Validated when the scanner compiles it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// Stable id (`[A-Za-z0-9_-]+`), reported in findings and 403 bodies.
    pub id: String,
    /// Any of these (ASCII case-insensitive, at least 3 characters) must occur for the
    /// rule to run; empty means the regex runs over everything (slow: avoid).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The regex; the `s` group (or the whole match) is the secret.
    pub pattern: String,
    /// Minimum Shannon entropy (bits per byte) of the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_entropy: Option<f64>,
    /// Extra validation.
    #[serde(default, skip_serializing_if = "Validator::is_none")]
    pub validator: Validator,
    /// How far past the keyword hit the secret may end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<usize>,
}

impl From<&RuleSpec> for RuleDef {
    fn from(spec: &RuleSpec) -> RuleDef {
        RuleDef {
            id: spec.id.to_string(),
            keywords: spec.keywords.iter().map(|k| k.to_string()).collect(),
            pattern: spec.pattern.to_string(),
            min_entropy: spec.min_entropy,
            validator: spec.validator,
            reach: spec.reach,
        }
    }
}

/// One built-in rule.
#[derive(Debug, Clone, Copy)]
pub struct RuleSpec {
    /// Stable id, reported in findings and 403 bodies.
    pub id: &'static str,
    /// Human name.
    pub name: &'static str,
    /// Any of these (ASCII case-insensitive) must occur for the rule to run; empty means
    /// always run (kept for formats with no literal anchor, e.g. card numbers).
    pub keywords: &'static [&'static str],
    /// The regex; the `s` group (or the whole match) is the secret.
    pub pattern: &'static str,
    /// Minimum Shannon entropy (bits per byte) of the secret, if any.
    pub min_entropy: Option<f64>,
    /// Extra validation.
    pub validator: Validator,
    /// How far past the keyword hit the secret may end (bytes); `None` is
    /// [`crate::DEFAULT_REACH`].
    pub reach: Option<usize>,
    /// A template for a fake true positive.
    pub example: &'static str,
    /// A template that must not match (a near miss).
    pub near_miss: &'static str,
}

const fn rule(
    id: &'static str,
    name: &'static str,
    keywords: &'static [&'static str],
    pattern: &'static str,
    example: &'static str,
    near_miss: &'static str,
) -> RuleSpec {
    RuleSpec {
        id,
        name,
        keywords,
        pattern,
        min_entropy: None,
        validator: Validator::None,
        reach: None,
        example,
        near_miss,
    }
}

macro_rules! bounded {
    ($inner:literal) => {
        concat!(r"(?:^|[^A-Za-z0-9_\-])(?P<s>", $inner, r")(?:$|[^A-Za-z0-9_\-])")
    };
}

impl Validator {
    fn is_none(&self) -> bool {
        *self == Validator::None
    }
}

/// Every built-in rule.
pub const BUILTIN: &[RuleSpec] = &[
    // --- cloud ---
    rule(
        "aws-access-key-id",
        "AWS access key id",
        &["akia", "asia", "abia", "acca"],
        bounded!("(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}"),
        "AKIA{U:16}",
        "AKIA{U:15}",
    ),
    RuleSpec {
        min_entropy: Some(3.5),
        ..rule(
            "aws-secret-access-key",
            "AWS secret access key",
            &["aws_secret", "secret_access_key", "aws-secret", "secretaccesskey"],
            r#"(?i)(?:aws_?secret_?(?:access_?)?key|secretaccesskey)["']?\s*[:=]\s*["']?(?P<s>[A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+])"#,
            "aws_secret_access_key = {b:40}",
            "aws_secret_access_key = {b:30}",
        )
    },
    RuleSpec {
        reach: Some(2048),
        ..rule(
            "aws-session-token",
            "AWS session token",
            &["aws_session_token", "x-amz-security-token"],
            r#"(?i)(?:aws_session_token|x-amz-security-token)["']?\s*[:=]\s*["']?(?P<s>[A-Za-z0-9/+=]{100,})"#,
            "AWS_SESSION_TOKEN={b:120}",
            "AWS_SESSION_TOKEN={b:40}",
        )
    },
    rule(
        "gcp-api-key",
        "Google API key",
        &["aiza"],
        bounded!("AIza[0-9A-Za-z_\\-]{35}"),
        "AIza{w:35}",
        "AIza{w:30}",
    ),
    rule(
        "gcp-service-account",
        "GCP service account private key",
        &["private_key_id"],
        r#""private_key_id"\s*:\s*"(?P<s>[a-f0-9]{40})""#,
        "\"private_key_id\": \"{h:40}\"",
        "\"private_key_id\": \"{h:20}\"",
    ),
    rule(
        "gcp-oauth-client-secret",
        "Google OAuth client secret",
        &["gocspx-"],
        bounded!("GOCSPX-[A-Za-z0-9_\\-]{28}"),
        "GOCSPX-{w:28}",
        "GOCSPX-{w:20}",
    ),
    rule(
        "azure-storage-key",
        "Azure storage account key",
        &["accountkey="],
        r"AccountKey=(?P<s>[A-Za-z0-9+/]{86}==)",
        "AccountKey={b:86}==",
        "AccountKey={b:40}==",
    ),
    RuleSpec {
        min_entropy: Some(3.0),
        ..rule(
            "azure-client-secret",
            "Azure AD client secret",
            &["azure_client_secret", "client_secret"],
            r#"(?i)(?:azure_)?client_secret["']?\s*[:=]\s*["']?(?P<s>[A-Za-z0-9_~.\-]{34,40})(?:$|[^A-Za-z0-9_~.\-])"#,
            "AZURE_CLIENT_SECRET={a:34}",
            "AZURE_CLIENT_SECRET={a:12}",
        )
    },
    rule(
        "digitalocean-token",
        "DigitalOcean token",
        &["dop_v1_", "doo_v1_", "dor_v1_"],
        bounded!("do[opr]_v1_[a-f0-9]{64}"),
        "dop_v1_{h:64}",
        "dop_v1_{h:60}",
    ),
    rule(
        "alibaba-access-key",
        "Alibaba Cloud access key id",
        &["ltai"],
        bounded!("LTAI[A-Za-z0-9]{20}"),
        "LTAI{a:20}",
        "LTAI{a:12}",
    ),
    // --- code hosts and registries ---
    rule(
        "github-pat-classic",
        "GitHub personal access token (classic)",
        &["ghp_"],
        bounded!("ghp_[A-Za-z0-9]{36}"),
        "ghp_{a:36}",
        "ghp_{a:35}",
    ),
    rule(
        "github-oauth",
        "GitHub OAuth access token",
        &["gho_"],
        bounded!("gho_[A-Za-z0-9]{36}"),
        "gho_{a:36}",
        "gho_{a:30}",
    ),
    rule(
        "github-user-to-server",
        "GitHub user-to-server token",
        &["ghu_"],
        bounded!("ghu_[A-Za-z0-9]{36}"),
        "ghu_{a:36}",
        "ghu_{a:20}",
    ),
    rule(
        "github-server-to-server",
        "GitHub app installation token",
        &["ghs_"],
        bounded!("ghs_[A-Za-z0-9]{36}"),
        "ghs_{a:36}",
        "ghs_{a:34}",
    ),
    rule(
        "github-refresh",
        "GitHub refresh token",
        &["ghr_"],
        bounded!("ghr_[A-Za-z0-9]{36,76}"),
        "ghr_{a:36}",
        "ghr_{a:22}",
    ),
    rule(
        "github-fine-grained",
        "GitHub fine-grained personal access token",
        &["github_pat_"],
        bounded!("github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}"),
        "github_pat_{a:22}_{a:59}",
        "github_pat_{a:22}_{a:40}",
    ),
    rule(
        "gitlab-pat",
        "GitLab personal access token",
        &["glpat-"],
        bounded!("glpat-[A-Za-z0-9_\\-]{20}"),
        "glpat-{w:20}",
        "glpat-{w:12}",
    ),
    rule(
        "gitlab-runner",
        "GitLab runner registration token",
        &["glrt-", "gr1348941"],
        bounded!("(?:glrt-|GR1348941)[A-Za-z0-9_\\-]{20}"),
        "glrt-{w:20}",
        "glrt-{w:10}",
    ),
    rule(
        "gitlab-deploy",
        "GitLab deploy token",
        &["gldt-"],
        bounded!("gldt-[A-Za-z0-9_\\-]{20}"),
        "gldt-{w:20}",
        "gldt-{w:8}",
    ),
    rule(
        "bitbucket-app-password",
        "Bitbucket app password",
        &["atbb"],
        bounded!("ATBB[A-Za-z0-9_=.\\-]{32}"),
        "ATBB{a:32}",
        "ATBB{a:16}",
    ),
    rule(
        "npm-token",
        "npm access token",
        &["npm_"],
        bounded!("npm_[A-Za-z0-9]{36}"),
        "npm_{a:36}",
        "npm_{a:30}",
    ),
    rule(
        "pypi-token",
        "PyPI upload token",
        &["pypi-ageichlw"],
        bounded!("pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\\-]{50,}"),
        "pypi-AgEIcHlwaS5vcmc{w:60}",
        "pypi-AgEIcHlwaS5vcmc{w:20}",
    ),
    rule(
        "rubygems-key",
        "RubyGems API key",
        &["rubygems_"],
        bounded!("rubygems_[a-f0-9]{48}"),
        "rubygems_{h:48}",
        "rubygems_{h:40}",
    ),
    rule(
        "docker-hub-pat",
        "Docker Hub personal access token",
        &["dckr_pat_"],
        bounded!("dckr_pat_[A-Za-z0-9_\\-]{27}"),
        "dckr_pat_{w:27}",
        "dckr_pat_{w:20}",
    ),
    rule(
        "hashicorp-vault",
        "HashiCorp Vault token",
        &["hvs.", "hvb."],
        bounded!("hv[sb]\\.[A-Za-z0-9_\\-]{24,}"),
        "hvs.{w:90}",
        "hvs.{w:10}",
    ),
    rule(
        "terraform-cloud",
        "Terraform Cloud token",
        &[".atlasv1."],
        bounded!("[A-Za-z0-9]{14}\\.atlasv1\\.[A-Za-z0-9_=\\-]{60,70}"),
        "{a:14}.atlasv1.{w:64}",
        "{a:14}.atlasv1.{w:20}",
    ),
    // --- chat ---
    rule(
        "slack-token",
        "Slack token",
        &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-"],
        bounded!("xox[bparse]-[0-9]{10,13}-[0-9A-Za-z\\-]{10,80}"),
        "xoxb-{d:12}-{d:12}-{a:24}",
        "xoxb-{d:4}-{a:4}",
    ),
    rule(
        "slack-webhook",
        "Slack incoming webhook",
        &["hooks.slack.com"],
        r"https://hooks\.slack\.com/(?:services|workflows)/(?P<s>[A-Za-z0-9+/]{40,})",
        "https://hooks.slack.com/services/T{u:8}/B{u:8}/{a:24}",
        "https://hooks.slack.com/services/short",
    ),
    rule(
        "discord-webhook",
        "Discord webhook",
        &["discord.com/api/webhooks", "discordapp.com/api/webhooks"],
        r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/(?P<s>[0-9]{17,20}/[A-Za-z0-9_\-]{60,68})",
        "https://discord.com/api/webhooks/{d:18}/{w:68}",
        "https://discord.com/api/webhooks/{d:18}/{w:10}",
    ),
    RuleSpec {
        min_entropy: Some(3.5),
        ..rule(
            "discord-bot-token",
            "Discord bot token",
            &["discord", "bot "],
            r"(?i)(?:discord|bot )[^\n]{0,40}?(?P<s>[MN][A-Za-z\d]{23,25}\.[\w\-]{6}\.[\w\-]{27,38})",
            "discord token {X}",
            "discord token none",
        )
    },
    rule(
        "telegram-bot-token",
        "Telegram bot token",
        &["telegram", "api.telegram.org", "/bot"],
        r"(?i)(?:telegram|api\.telegram\.org/bot|/bot)[^\n]{0,30}?(?P<s>[0-9]{8,10}:AA[A-Za-z0-9_\-]{33})",
        "telegram_token={d:10}:AA{w:33}",
        "telegram_token={d:10}:AA{w:20}",
    ),
    rule(
        "twilio-api-key",
        "Twilio API key",
        // "SK" then a hex digit: a bare "sk" would fire in every "ask" and "task".
        &[
            "sk0", "sk1", "sk2", "sk3", "sk4", "sk5", "sk6", "sk7", "sk8", "sk9", "ska", "skb",
            "skc", "skd", "ske", "skf",
        ],
        bounded!("SK[0-9a-f]{32}"),
        "SK{h:32}",
        "SK{h:31}",
    ),
    rule(
        "sendgrid-key",
        "SendGrid API key",
        &["sg."],
        bounded!("SG\\.[A-Za-z0-9_\\-]{22}\\.[A-Za-z0-9_\\-]{43}"),
        "SG.{w:22}.{w:43}",
        "SG.{w:22}.{w:20}",
    ),
    rule(
        "mailgun-key",
        "Mailgun API key",
        &["key-"],
        bounded!("key-[0-9a-f]{32}"),
        "key-{h:32}",
        "key-{h:16}",
    ),
    rule(
        "mailchimp-key",
        "Mailchimp API key",
        &["-us"],
        bounded!("[0-9a-f]{32}-us[0-9]{1,2}"),
        "{h:32}-us12",
        "{h:20}-us12",
    ),
    // --- payments ---
    rule(
        "stripe-secret-key",
        "Stripe secret key",
        &["sk_live_", "sk_test_"],
        bounded!("sk_(?:live|test)_[0-9A-Za-z]{24,99}"),
        "sk_live_{a:24}",
        "sk_live_{a:12}",
    ),
    rule(
        "stripe-restricted-key",
        "Stripe restricted key",
        &["rk_live_", "rk_test_"],
        bounded!("rk_(?:live|test)_[0-9A-Za-z]{24,99}"),
        "rk_live_{a:24}",
        "rk_live_{a:10}",
    ),
    rule(
        "stripe-webhook-secret",
        "Stripe webhook signing secret",
        &["whsec_"],
        bounded!("whsec_[A-Za-z0-9]{32,}"),
        "whsec_{a:32}",
        "whsec_{a:16}",
    ),
    rule(
        "square-token",
        "Square access token",
        &["sq0atp-", "eaaa"],
        bounded!("(?:sq0atp-[0-9A-Za-z_\\-]{22}|EAAA[A-Za-z0-9_\\-]{60})"),
        "sq0atp-{w:22}",
        "sq0atp-{w:10}",
    ),
    rule(
        "shopify-token",
        "Shopify access token",
        &["shpat_", "shpca_", "shppa_", "shpss_"],
        bounded!("shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"),
        "shpat_{h:32}",
        "shpat_{h:30}",
    ),
    rule(
        "paypal-braintree",
        "PayPal Braintree access token",
        &["access_token$production$"],
        r"access_token\$production\$(?P<s>[0-9a-z]{16}\$[0-9a-f]{32})",
        "access_token$production${l:16}${h:32}",
        "access_token$production${l:10}",
    ),
    RuleSpec {
        validator: Validator::Luhn,
        ..rule(
            "payment-card",
            "Payment card number",
            &["card", "visa", "mastercard", "amex", "credit", "cc_num", "ccnum", " pan", "_pan"],
            r"(?i)(?:card|visa|mastercard|amex|credit|cc_?num(?:ber)?|(?-u:\b)pan)[^\n0-9]{0,40}?(?P<s>(?:4[0-9]{3}|5[1-5][0-9]{2}|3[47][0-9]{2}|6011)(?:[ \-]?[0-9]{4}){2}[ \-]?[0-9]{1,4})(?:$|[^0-9])",
            "card number: {CARD}",
            "card number: 4111 1111 1111 1112",
        )
    },
    RuleSpec {
        validator: Validator::Iban,
        ..rule(
            "iban",
            "IBAN",
            &["iban"],
            r"(?i)iban[^\n]{0,20}?(?P<s>[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?)(?:$|[^A-Z0-9])",
            "IBAN: {IBAN}",
            "IBAN: GB00 WEST 1234 5698 7654 32",
        )
    },
    // --- AI providers ---
    rule(
        "anthropic-api-key",
        "Anthropic API key",
        &["sk-ant-"],
        bounded!("sk-ant-(?:api03|admin01)-[A-Za-z0-9_\\-]{93}AA"),
        "sk-ant-api03-{w:93}AA",
        "sk-ant-api03-{w:40}AA",
    ),
    rule(
        "openai-project-key",
        "OpenAI project key",
        &["sk-proj-", "sk-svcacct-", "sk-admin-"],
        bounded!("sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\\-]{40,200}"),
        "sk-proj-{w:120}",
        "sk-proj-{w:20}",
    ),
    rule(
        "openai-legacy-key",
        "OpenAI API key (legacy)",
        &["t3blbkfj"],
        bounded!("sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"),
        "sk-{a:20}T3BlbkFJ{a:20}",
        "sk-{a:20}T3BlbkFJ{a:10}",
    ),
    rule(
        "huggingface-token",
        "Hugging Face token",
        &["hf_"],
        bounded!("hf_[A-Za-z]{34}"),
        "hf_{A:34}",
        "hf_{A:30}",
    ),
    rule(
        "replicate-token",
        "Replicate API token",
        &["r8_"],
        bounded!("r8_[A-Za-z0-9]{37}"),
        "r8_{a:37}",
        "r8_{a:20}",
    ),
    rule(
        "groq-key",
        "Groq API key",
        &["gsk_"],
        bounded!("gsk_[A-Za-z0-9]{52}"),
        "gsk_{a:52}",
        "gsk_{a:30}",
    ),
    rule(
        "xai-key",
        "xAI API key",
        &["xai-"],
        bounded!("xai-[A-Za-z0-9]{80}"),
        "xai-{a:80}",
        "xai-{a:40}",
    ),
    rule(
        "perplexity-key",
        "Perplexity API key",
        &["pplx-"],
        bounded!("pplx-[A-Za-z0-9]{48}"),
        "pplx-{a:48}",
        "pplx-{a:20}",
    ),
    // --- keys, tokens, URLs ---
    RuleSpec {
        reach: Some(8192),
        ..rule(
            "pem-private-key",
            "PEM private key",
            &["private key-----"],
            r"-----BEGIN (?:RSA |EC |DSA |ENCRYPTED |)PRIVATE KEY-----(?P<s>[\sA-Za-z0-9+/=]{64,})",
            "-----BEGIN PRIVATE KEY-----\n{b:64}\n{b:64}\n-----END PRIVATE KEY-----",
            "-----BEGIN PUBLIC KEY-----\n{b:64}\n-----END PUBLIC KEY-----",
        )
    },
    RuleSpec {
        reach: Some(8192),
        ..rule(
            "openssh-private-key",
            "OpenSSH private key",
            &["openssh private key"],
            r"-----BEGIN OPENSSH PRIVATE KEY-----(?P<s>[\sA-Za-z0-9+/=]{64,})",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA{b:60}\n",
            "-----BEGIN OPENSSH PUBLIC KEY-----\n{b:64}\n",
        )
    },
    RuleSpec {
        reach: Some(8192),
        ..rule(
            "pgp-private-key",
            "PGP private key block",
            &["pgp private key block"],
            r"-----BEGIN PGP PRIVATE KEY BLOCK-----(?P<s>[\sA-Za-z0-9+/=:]{64,})",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{b:64}\n",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{b:64}\n",
        )
    },
    RuleSpec {
        validator: Validator::Jwt,
        reach: Some(4096),
        ..rule(
            "jwt",
            "JSON Web Token",
            &["eyj"],
            r"(?:^|[^A-Za-z0-9_\-])(?P<s>eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{16,})(?:$|[^A-Za-z0-9_\-.])",
            "{JWT}",
            "eyJub3QiOiJqc29u.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{w:30}",
        )
    },
    RuleSpec {
        min_entropy: Some(3.0),
        ..rule(
            "basic-auth-url",
            "Credentials in a URL",
            &["://"],
            r"(?i)(?-u:\b)[a-z][a-z0-9+.\-]{1,15}://[^\s:/@]{1,64}:(?P<s>[^\s:/@<>{}$*]{10,128})@[a-z0-9.\-]+",
            "https://admin:{a:16}@db.example.com/",
            "https://user:password@example.com/",
        )
    },
    rule(
        "database-url",
        "Database connection string with password",
        &[
            "postgres://",
            "postgresql://",
            "mysql://",
            "mongodb+srv://",
            "mongodb://",
            "redis://",
            "amqp://",
        ],
        r"(?i)(?:postgres(?:ql)?|mysql|mongodb(?:\+srv)?|redis|amqps?)://[^\s:/@]*:(?P<s>[^\s:/@]{4,128})@",
        "postgres://app:{a:20}@10.0.0.5:5432/db",
        "postgres://app@10.0.0.5:5432/db",
    ),
    RuleSpec {
        min_entropy: Some(3.5),
        ..rule(
            "generic-secret-assignment",
            "High-entropy quoted secret assigned to a secret-like name",
            &[
                "secret",
                "token",
                "password",
                "passwd",
                "api_key",
                "apikey",
                "api-key",
                "access_key",
                "auth_key",
            ],
            r#"(?i)(?:secret|token|password|passwd|api[_\-]?key|access[_\-]?key|auth[_\-]?key)[a-z0-9_\-]{0,20}["']?\s*(?::|=|:=|=>)\s*["'](?P<s>[A-Za-z0-9/+_\-.=]*[0-9][A-Za-z0-9/+_\-.=]*)["']"#,
            "client_secret = \"{a:32}7\"",
            "client_secret = \"changeme\"",
        )
    },
    RuleSpec {
        min_entropy: Some(3.5),
        ..rule(
            "env-secret-assignment",
            "High-entropy secret in a .env style assignment",
            &["secret", "token", "password", "api_key", "access_key"],
            r"(?m)^(?:export\s+)?[A-Z0-9_]*(?:SECRET|TOKEN|PASSWORD|API_KEY|ACCESS_KEY)[A-Z0-9_]*=(?P<s>[A-Za-z0-9/+_\-.=]*[0-9][A-Za-z0-9/+_\-.=]*)\s*$",
            "export DEPLOY_TOKEN={a:30}9",
            "export DEPLOY_TOKEN=changeme",
        )
    },
    rule(
        "bearer-token-header",
        "Bearer token in a header",
        &["bearer "],
        r"(?i)authorization:\s*bearer\s+(?P<s>[A-Za-z0-9_\-.=~+/]{32,})",
        "Authorization: Bearer {w:40}",
        "Authorization: Bearer short",
    ),
    rule(
        "sentry-dsn",
        "Sentry DSN",
        &["ingest.sentry.io", "sentry.io"],
        r"https://(?P<s>[a-f0-9]{32})@[a-z0-9.\-]*sentry\.io/[0-9]+",
        "https://{h:32}@o123456.ingest.sentry.io/123456",
        "https://sentry.io/123456",
    ),
    rule(
        "datadog-api-key",
        "Datadog API key",
        &["dd_api_key", "datadog_api_key", "dd-api-key"],
        r#"(?i)(?:dd|datadog)[_\-]api[_\-]key["']?\s*[:=]\s*["']?(?P<s>[a-f0-9]{32})"#,
        "DD_API_KEY={h:32}",
        "DD_API_KEY={h:10}",
    ),
    rule(
        "new-relic-key",
        "New Relic key",
        &["nrak-", "nrjs-", "nrii-"],
        bounded!("NR(?:AK|JS|II)-[A-Z0-9]{27}"),
        "NRAK-{U:27}",
        "NRAK-{U:10}",
    ),
    rule(
        "linear-api-key",
        "Linear API key",
        &["lin_api_"],
        bounded!("lin_api_[A-Za-z0-9]{40}"),
        "lin_api_{a:40}",
        "lin_api_{a:20}",
    ),
    rule(
        "notion-token",
        "Notion integration token",
        &["secret_", "ntn_"],
        bounded!("(?:secret_[A-Za-z0-9]{43}|ntn_[A-Za-z0-9]{46})"),
        "ntn_{a:46}",
        "ntn_{a:20}",
    ),
    RuleSpec {
        reach: Some(2048),
        ..rule(
            "atlassian-token",
            "Atlassian API token",
            &["atatt"],
            bounded!("ATATT3[A-Za-z0-9_\\-=]{180,}"),
            "ATATT3{w:186}",
            "ATATT3{w:40}",
        )
    },
    rule(
        "cloudflare-token",
        "Cloudflare API token",
        &["cloudflare", "cf_api_token"],
        r#"(?i)(?:cloudflare|cf)[_\-]?api[_\-]?token["']?\s*[:=]\s*["']?(?P<s>[A-Za-z0-9_\-]{40})(?:$|[^A-Za-z0-9_\-])"#,
        "CLOUDFLARE_API_TOKEN={w:40}",
        "CLOUDFLARE_API_TOKEN={w:20}",
    ),
    rule(
        "age-secret-key",
        "age secret key",
        &["age-secret-key-1"],
        bounded!("AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"),
        "AGE-SECRET-KEY-1{BECH:58}",
        "AGE-SECRET-KEY-1{BECH:20}",
    ),
];
