//! The review workflow and the authorisation rules: pure, no IO.
//!
//! A lesson moves through these states (rejections go back to the submitter, who may edit the
//! metadata and submit again):
//!
//! ```text
//!  processing ──job done──▶ draft ──submit──▶ submitted ──review──▶ reviewed ──approve──▶ approved ──publish──▶ published
//!      │                      ▲                  │                     │                     │                     │
//!   job failed /              │                reject               reject                reject               withdraw
//!   cancelled                 │                  ▼                     ▼                     ▼                     ▼
//!      ▼                      └──── (edit) ─── rejected ◀──────────────┴─────────────────────┘               withdrawn ──submit──▶ submitted
//!   failed
//! ```
//!
//! Who may do what is [`required_roles`]: a submitter uploads, creates, edits and submits; a
//! (department) reviewer reviews or rejects a submitted lesson; a (platform) publisher approves
//! or rejects a reviewed one, publishes, withdraws and schedules; an operator reads the audit log
//! and cancels jobs; a viewer only reads. No role may do another's step, so the four-eyes rule
//! holds by construction. A token bound to a department acts only on that department's lessons.

use std::fmt;

use courseway_content::Category;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Submitter,
    Reviewer,
    Publisher,
    Operator,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Submitter,
        Role::Reviewer,
        Role::Publisher,
        Role::Operator,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Reviewer => "reviewer",
            Role::Publisher => "publisher",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a lesson is in the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LessonState {
    /// Its ingest job is probing or transcoding.
    Processing,
    /// Its ingest job failed or was cancelled; nothing can be done with it.
    Failed,
    /// Transcoded, not submitted yet.
    Draft,
    Submitted,
    /// Passed the department's review.
    Reviewed,
    /// Approved by the platform's publisher.
    Approved,
    /// In the signed catalog.
    Published,
    /// Sent back to the submitter with a comment.
    Rejected,
    /// Taken out of the catalog.
    Withdrawn,
}

impl LessonState {
    pub const ALL: [LessonState; 9] = [
        LessonState::Processing,
        LessonState::Failed,
        LessonState::Draft,
        LessonState::Submitted,
        LessonState::Reviewed,
        LessonState::Approved,
        LessonState::Published,
        LessonState::Rejected,
        LessonState::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LessonState::Processing => "processing",
            LessonState::Failed => "failed",
            LessonState::Draft => "draft",
            LessonState::Submitted => "submitted",
            LessonState::Reviewed => "reviewed",
            LessonState::Approved => "approved",
            LessonState::Published => "published",
            LessonState::Rejected => "rejected",
            LessonState::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<LessonState> {
        LessonState::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the submitter may change the metadata in this state.
    pub fn editable(self) -> bool {
        matches!(
            self,
            LessonState::Draft | LessonState::Rejected | LessonState::Withdrawn
        )
    }
}

impl fmt::Display for LessonState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a token holder can ask the admin API to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// List, search and read lessons and jobs.
    Read,
    /// Read the audit log.
    ReadAudit,
    /// Upload a file to the spool.
    Upload,
    /// Create a lesson from a completed upload (starts its ingest job).
    CreateLesson,
    EditMetadata,
    CancelJob,
    /// Watch a lesson's transcoded renditions before it is published.
    Preview,
    Submit,
    Review,
    Approve,
    Reject,
    Publish,
    Withdraw,
    Schedule,
    /// Revoke a node (the next catalog lists it; every node refuses it).
    Revoke,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::ReadAudit => "read-audit",
            Action::Upload => "upload",
            Action::CreateLesson => "create-lesson",
            Action::EditMetadata => "edit-metadata",
            Action::CancelJob => "cancel-job",
            Action::Preview => "preview",
            Action::Submit => "submit",
            Action::Review => "review",
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Publish => "publish",
            Action::Withdraw => "withdraw",
            Action::Schedule => "schedule",
            Action::Revoke => "revoke",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is asking: a token's name, role and (optionally) department.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// A token bound to a department acts only on that department's lessons.
    pub department: Option<String>,
}

/// The roles that may do `action`; for a rejection it depends on the lesson's state (a
/// reviewer rejects at the department's step, a publisher at the platform's).
pub fn required_roles(action: Action, state: Option<LessonState>) -> &'static [Role] {
    use Role::*;
    match action {
        Action::Read => &[Submitter, Reviewer, Publisher, Operator, Viewer],
        Action::ReadAudit | Action::Revoke => &[Operator],
        Action::Upload | Action::CreateLesson | Action::EditMetadata | Action::Submit => &[Submitter],
        Action::CancelJob => &[Submitter, Operator],
        Action::Preview => &[Submitter, Reviewer, Publisher, Operator],
        Action::Review => &[Reviewer],
        Action::Reject => match state {
            Some(LessonState::Submitted) => &[Reviewer],
            Some(LessonState::Reviewed | LessonState::Approved) => &[Publisher],
            _ => &[Reviewer, Publisher],
        },
        Action::Approve | Action::Publish | Action::Withdraw | Action::Schedule => &[Publisher],
    }
}

/// Why an authenticated principal may not do something (HTTP 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("role {role} may not {action}; it needs a {} token", join_roles(needed))]
    Role {
        role: Role,
        action: Action,
        needed: &'static [Role],
    },
    #[error("this token acts for department {token:?} only; the lesson belongs to {lesson:?}")]
    Department { token: String, lesson: String },
}

fn join_roles(roles: &[Role]) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ")
}

/// Whether `who` may do `action`, on a lesson of `department` in `state` when the action is
/// about one lesson.
pub fn authorize(who: &Principal, action: Action, lesson: Option<(&str, LessonState)>) -> Result<(), Denied> {
    let needed = required_roles(action, lesson.map(|(_, s)| s));
    if !needed.contains(&who.role) {
        return Err(Denied::Role {
            role: who.role,
            action,
            needed,
        });
    }
    if let (Some(token), Some((department, _))) = (&who.department, lesson) {
        if token != department && action != Action::Read {
            return Err(Denied::Department {
                token: token.clone(),
                lesson: department.to_string(),
            });
        }
    }
    Ok(())
}

/// Whether a lesson offered by a mirror (`[[mirror]] review = "local"`) allows `action`. Its
/// content and metadata are the upstream's, so nobody here edits or submits it: it is reviewed,
/// approved, rejected, published and withdrawn like any other.
pub fn mirrored_allows(action: Action) -> bool {
    !matches!(action, Action::EditMetadata | Action::Submit | Action::CancelJob)
}

/// A workflow step the lesson's state does not allow (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a lesson that is {state}; {hint}")]
pub struct IllegalTransition {
    pub action: Action,
    pub state: LessonState,
    pub hint: &'static str,
}

/// The state a workflow `action` leads to from `state`.
pub fn transition(state: LessonState, action: Action) -> Result<LessonState, IllegalTransition> {
    use LessonState::*;
    let next = match (action, state) {
        (Action::Submit, Draft | Rejected | Withdrawn) => Some(Submitted),
        (Action::Review, Submitted) => Some(Reviewed),
        (Action::Approve, Reviewed) => Some(Approved),
        (Action::Reject, Submitted | Reviewed | Approved) => Some(Rejected),
        (Action::Publish, Approved) => Some(Published),
        (Action::Withdraw, Published) => Some(Withdrawn),
        (Action::EditMetadata, s) if s.editable() => Some(s),
        _ => None,
    };
    next.ok_or(IllegalTransition {
        action,
        state,
        hint: hint(action),
    })
}

fn hint(action: Action) -> &'static str {
    match action {
        Action::Submit => "only a draft, rejected or withdrawn lesson can be submitted",
        Action::Review => "only a submitted lesson can be reviewed",
        Action::Approve => "only a reviewed lesson can be approved",
        Action::Reject => "only a submitted, reviewed or approved lesson can be rejected",
        Action::Publish => "only an approved lesson can be published",
        Action::Withdraw => "only a published lesson can be withdrawn",
        Action::EditMetadata => "only a draft, rejected or withdrawn lesson can be edited; reject it first",
        _ => "this is not a workflow step",
    }
}

/// A lesson's descriptive fields as the submitter gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub title: String,
    /// The publishing department (发布部门).
    pub department: String,
    pub category: Category,
    pub tags: Vec<String>,
    /// BCP 47 language tag, e.g. `zh-CN`.
    pub language: String,
    pub description: String,
}

/// Most characters in a title.
pub const MAX_TITLE_CHARS: usize = 200;
/// Most characters in a department's name.
pub const MAX_DEPARTMENT_CHARS: usize = 100;
/// Most tags on a lesson (the manifest's limit).
pub const MAX_TAGS: usize = courseway_content::lesson::MAX_TAGS;
/// Most bytes in a tag (the manifest's limit).
pub const MAX_TAG_BYTES: usize = courseway_content::encoding::MAX_TAG_LEN;
/// Most characters in a description.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;

/// Every problem with a lesson's metadata, so the submitter can fix them all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the lesson's metadata is not valid: {}", problems.join("; "))]
pub struct MetadataError {
    pub problems: Vec<String>,
}

pub use courseway_admin_proto::body::DeclaredMedia;

/// Why a probed upload does not match what it was declared as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaMismatch {
    #[error("it has no video stream (audio only), but the lesson was declared as video; upload the video file, or declare the lesson as audio (\"media\": \"audio\", `--media audio`)")]
    NoVideo,
    #[error("it has a video stream, but the lesson was declared as audio; declare it as video (\"media\": \"video\", `--media video`), or upload the audio track alone")]
    HasVideo,
}

/// Checks a probed upload against what the submitter declared (nothing declared: any media).
pub fn check_declared_media(declared: Option<DeclaredMedia>, has_video: bool) -> Result<(), MediaMismatch> {
    match (declared, has_video) {
        (Some(DeclaredMedia::Video), false) => Err(MediaMismatch::NoVideo),
        (Some(DeclaredMedia::Audio), true) => Err(MediaMismatch::HasVideo),
        _ => Ok(()),
    }
}

/// Parses a category: `required` / `必修` or `elective` / `选修`.
pub fn parse_category(s: &str) -> Option<Category> {
    match s.trim() {
        "required" | "必修" => Some(Category::Required),
        "elective" | "选修" => Some(Category::Elective),
        _ => None,
    }
}

pub fn category_str(c: Category) -> &'static str {
    match c {
        Category::Required => "required",
        Category::Elective => "elective",
    }
}

fn valid_language(s: &str) -> bool {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or_default();
    s.len() <= 35
        && (2..=3).contains(&first.len())
        && first.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

impl Metadata {
    /// Checks every field; trims surrounding white space first.
    pub fn validated(mut self) -> Result<Metadata, MetadataError> {
        let mut problems = Vec::new();
        self.title = self.title.trim().to_string();
        self.department = self.department.trim().to_string();
        self.language = self.language.trim().to_string();
        self.description = self.description.trim().to_string();
        let has_control = |s: &str| s.chars().any(char::is_control);
        if self.title.is_empty() {
            problems.push("title is empty; give the lesson's title".to_string());
        } else if self.title.chars().count() > MAX_TITLE_CHARS {
            problems.push(format!("title is longer than {MAX_TITLE_CHARS} characters"));
        } else if has_control(&self.title) {
            problems.push("title contains control characters (line breaks, tabs)".to_string());
        }
        if self.department.is_empty() {
            problems.push("department is empty; give the publishing department, e.g. 农业局".to_string());
        } else if self.department.chars().count() > MAX_DEPARTMENT_CHARS || has_control(&self.department) {
            problems.push(format!(
                "department must be at most {MAX_DEPARTMENT_CHARS} characters on one line"
            ));
        }
        let mut tags = Vec::new();
        for tag in &self.tags {
            let tag = tag.trim();
            if tag.is_empty() {
                continue;
            }
            if tag.len() > MAX_TAG_BYTES || has_control(tag) || tag.contains(',') {
                problems.push(format!(
                    "tag {tag:?} must be at most {MAX_TAG_BYTES} bytes, on one line, without commas"
                ));
            } else if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_string());
            }
        }
        if tags.len() > MAX_TAGS {
            problems.push(format!("{} tags given; at most {MAX_TAGS}", tags.len()));
        }
        self.tags = tags;
        if !valid_language(&self.language) {
            problems.push(format!(
                "language {:?} is not a language tag; give e.g. zh, zh-CN or en",
                self.language
            ));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            problems.push(format!("description is longer than {MAX_DESCRIPTION_CHARS} characters"));
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(MetadataError { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mirrored_lesson_is_reviewed_and_published_but_never_edited_or_submitted() {
        use super::{mirrored_allows, Action};
        for a in [Action::EditMetadata, Action::Submit, Action::CancelJob] {
            assert!(!mirrored_allows(a), "{a:?}");
        }
        for a in [
            Action::Read,
            Action::Preview,
            Action::Review,
            Action::Approve,
            Action::Reject,
            Action::Publish,
            Action::Withdraw,
        ] {
            assert!(mirrored_allows(a), "{a:?}");
        }
    }

    #[test]
    fn declared_media_must_match_the_probe() {
        use super::{check_declared_media as check, DeclaredMedia::*, MediaMismatch};
        assert_eq!(check(Some(Video), false), Err(MediaMismatch::NoVideo));
        assert_eq!(check(Some(Audio), true), Err(MediaMismatch::HasVideo));
        assert_eq!(check(Some(Video), true), Ok(()));
        assert_eq!(check(Some(Audio), false), Ok(()));
        assert_eq!(check(None, true), Ok(()));
        assert_eq!(check(None, false), Ok(()));
    }

    use super::*;

    fn who(role: Role) -> Principal {
        Principal {
            name: role.as_str().into(),
            role,
            department: None,
        }
    }

    fn meta() -> Metadata {
        Metadata {
            title: " 冬小麦病虫害防治 ".into(),
            department: "农业局".into(),
            category: Category::Required,
            tags: vec!["农业".into(), " 小麦 ".into(), "农业".into(), "".into()],
            language: "zh-CN".into(),
            description: "".into(),
        }
    }

    #[test]
    fn workflow_happy_path_and_rejections() {
        use LessonState::*;
        let mut s = Draft;
        for (action, next) in [
            (Action::Submit, Submitted),
            (Action::Reject, Rejected),
            (Action::Submit, Submitted),
            (Action::Review, Reviewed),
            (Action::Reject, Rejected),
            (Action::Submit, Submitted),
            (Action::Review, Reviewed),
            (Action::Approve, Approved),
            (Action::Reject, Rejected),
            (Action::Submit, Submitted),
            (Action::Review, Reviewed),
            (Action::Approve, Approved),
            (Action::Publish, Published),
            (Action::Withdraw, Withdrawn),
            (Action::Submit, Submitted),
        ] {
            s = transition(s, action).unwrap();
            assert_eq!(s, next, "after {action}");
        }
    }

    #[test]
    fn workflow_refuses_skipped_steps_and_names_the_state() {
        use LessonState::*;
        for (state, action) in [
            (Draft, Action::Approve),
            (Submitted, Action::Approve),
            (Submitted, Action::Publish),
            (Reviewed, Action::Publish),
            (Processing, Action::Submit),
            (Failed, Action::Submit),
            (Published, Action::Submit),
            (Published, Action::Reject),
            (Approved, Action::Withdraw),
            (Submitted, Action::EditMetadata),
            (Published, Action::EditMetadata),
        ] {
            let e = transition(state, action).unwrap_err();
            assert_eq!(e.state, state);
            assert!(e.to_string().contains(state.as_str()), "{e}");
        }
        assert_eq!(transition(Rejected, Action::EditMetadata), Ok(Rejected));
    }

    #[test]
    fn workflow_roles_do_only_their_own_step() {
        let lesson = |s| Some(("农业局", s));
        // A submitter cannot review, approve, publish or read the audit log.
        for action in [
            Action::Review,
            Action::Approve,
            Action::Publish,
            Action::Withdraw,
            Action::ReadAudit,
        ] {
            assert!(authorize(&who(Role::Submitter), action, lesson(LessonState::Submitted)).is_err());
        }
        // A reviewer reviews and rejects at the department step only.
        assert!(authorize(&who(Role::Reviewer), Action::Review, lesson(LessonState::Submitted)).is_ok());
        assert!(authorize(&who(Role::Reviewer), Action::Reject, lesson(LessonState::Submitted)).is_ok());
        assert!(authorize(&who(Role::Reviewer), Action::Reject, lesson(LessonState::Reviewed)).is_err());
        assert!(authorize(&who(Role::Reviewer), Action::Approve, lesson(LessonState::Reviewed)).is_err());
        // A publisher approves, rejects at the platform step, publishes, withdraws, schedules.
        for action in [
            Action::Approve,
            Action::Reject,
            Action::Publish,
            Action::Withdraw,
            Action::Schedule,
        ] {
            assert!(authorize(&who(Role::Publisher), action, lesson(LessonState::Reviewed)).is_ok());
        }
        assert!(authorize(&who(Role::Publisher), Action::Reject, lesson(LessonState::Submitted)).is_err());
        assert!(authorize(&who(Role::Publisher), Action::Review, lesson(LessonState::Submitted)).is_err());
        // A viewer reads and nothing else; an operator reads the audit log and cancels jobs.
        for action in [
            Action::Upload,
            Action::Submit,
            Action::Preview,
            Action::CancelJob,
            Action::ReadAudit,
        ] {
            assert!(authorize(&who(Role::Viewer), action, None).is_err(), "{action}");
        }
        assert!(authorize(&who(Role::Viewer), Action::Read, None).is_ok());
        assert!(authorize(&who(Role::Operator), Action::ReadAudit, None).is_ok());
        assert!(authorize(&who(Role::Operator), Action::CancelJob, None).is_ok());
        assert!(authorize(&who(Role::Operator), Action::Publish, None).is_err());
        let e = authorize(&who(Role::Submitter), Action::Approve, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "role submitter may not approve; it needs a publisher token"
        );
    }

    #[test]
    fn workflow_department_tokens_act_on_their_department_only() {
        let mut reviewer = who(Role::Reviewer);
        reviewer.department = Some("卫生局".into());
        let e = authorize(&reviewer, Action::Review, Some(("农业局", LessonState::Submitted))).unwrap_err();
        assert!(matches!(e, Denied::Department { .. }), "{e}");
        assert!(authorize(&reviewer, Action::Review, Some(("卫生局", LessonState::Submitted))).is_ok());
        assert!(authorize(&reviewer, Action::Read, Some(("农业局", LessonState::Submitted))).is_ok());
    }

    #[test]
    fn metadata_is_trimmed_and_deduplicated() {
        let m = meta().validated().unwrap();
        assert_eq!(m.title, "冬小麦病虫害防治");
        assert_eq!(m.tags, vec!["农业".to_string(), "小麦".to_string()]);
    }

    #[test]
    fn metadata_errors_name_every_problem() {
        let mut m = meta();
        m.title = "  ".into();
        m.department = "".into();
        m.language = "chinese!".into();
        m.tags = vec!["a,b".into()];
        m.description = "x".repeat(MAX_DESCRIPTION_CHARS + 1);
        let e = m.validated().unwrap_err();
        assert_eq!(e.problems.len(), 5, "{e}");
        assert!(e.to_string().contains("title is empty"));
        assert!(e.to_string().contains("language \"chinese!\""));
    }

    #[test]
    fn metadata_categories_in_english_and_chinese() {
        assert_eq!(parse_category("必修"), Some(Category::Required));
        assert_eq!(parse_category("elective"), Some(Category::Elective));
        assert_eq!(parse_category("optional"), None);
        assert!(valid_language("zh"));
        assert!(valid_language("zh-Hans-CN"));
        assert!(!valid_language("z"));
        assert!(!valid_language(""));
    }
}
