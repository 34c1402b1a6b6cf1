//! The visitor desk: `/api/v1/orgs/{org}/visitors…`, `/deny-list…`, `/appointments…` and
//! `/visits…` (the use cases are `app::visitors` and `app::visits`).

use actix_web::{HttpResponse, web};

use crate::app::hosts;
use crate::app::visitors::{self, DenyInput, VisitorInput, VisitorQuery};
use crate::app::visits::{self, AppointmentQuery, CreateAppointment, Review, VisitFilter, WalkIn};
use crate::app::{App, Caller};
use crate::auth::principal::policy;
use crate::db::pagination::ListQuery;
use crate::error::AppError;
use crate::http::auth::{Authorized, ClientAddr};
use crate::http::extract::Json;
use crate::http::no_store;

use super::path_id as id;

type Path = web::Path<(String, String)>;

macro_rules! caller {
    ($auth:expr, $addr:expr) => {
        Caller { principal: &$auth.principal, addr: $addr }
    };
}

pub async fn create_visitor(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsInvite>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<VisitorInput>,
) -> Result<HttpResponse, AppError> {
    let visitor = visitors::create(&state, &caller!(auth, addr), auth.org.id, body).await?;
    let mut answer = if visitor.recognised { HttpResponse::Ok() } else { HttpResponse::Created() };
    Ok(no_store(answer.take()).json(visitor))
}

pub async fn list_visitors(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsRead>,
    query: web::Query<VisitorQuery>,
) -> Result<HttpResponse, AppError> {
    let page = visitors::list(&state, &caller!(auth, None), auth.org.id, &query).await?;
    Ok(no_store(HttpResponse::Ok()).json(page))
}

pub async fn get_visitor(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsRead>,
    path: Path,
) -> Result<HttpResponse, AppError> {
    let visitor = visitors::get(&state, &caller!(auth, None), auth.org.id, id(&path.1, "visitor")?).await?;
    Ok(no_store(HttpResponse::Ok()).json(visitor))
}

pub async fn export_visitor(
    state: web::Data<App>,
    auth: Authorized<policy::OrgExport>,
    ClientAddr(addr): ClientAddr,
    path: Path,
) -> Result<HttpResponse, AppError> {
    let export = visitors::export(&state, &caller!(auth, addr), auth.org.id, id(&path.1, "visitor")?).await?;
    Ok(no_store(HttpResponse::Ok()).json(export))
}

pub async fn delete_visitor(
    state: web::Data<App>,
    auth: Authorized<policy::OrgExport>,
    ClientAddr(addr): ClientAddr,
    path: Path,
) -> Result<HttpResponse, AppError> {
    visitors::delete(&state, &caller!(auth, addr), auth.org.id, id(&path.1, "visitor")?).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn add_denial(
    state: web::Data<App>,
    auth: Authorized<policy::DenyListManage>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<DenyInput>,
) -> Result<HttpResponse, AppError> {
    let entry = visitors::deny_add(&state, &caller!(auth, addr), auth.org.id, body).await?;
    Ok(no_store(HttpResponse::Created()).json(entry))
}

pub async fn list_denials(
    state: web::Data<App>,
    auth: Authorized<policy::DenyListManage>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(no_store(HttpResponse::Ok()).json(visitors::deny_list(&state, auth.org.id, &query).await?))
}

pub async fn delete_denial(
    state: web::Data<App>,
    auth: Authorized<policy::DenyListManage>,
    ClientAddr(addr): ClientAddr,
    path: Path,
) -> Result<HttpResponse, AppError> {
    visitors::deny_remove(&state, &caller!(auth, addr), auth.org.id, id(&path.1, "deny-list entry")?).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn create_appointment(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsInvite>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<CreateAppointment>,
) -> Result<HttpResponse, AppError> {
    let appointment = visits::create_appointment(&state, &caller!(auth, addr), auth.org.id, body).await?;
    Ok(HttpResponse::Created().json(appointment))
}

pub async fn list_appointments(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsRead>,
    query: web::Query<AppointmentQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(visits::list_appointments(&state, &caller!(auth, None), auth.org.id, &query).await?))
}

pub async fn get_appointment(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsRead>,
    path: Path,
) -> Result<HttpResponse, AppError> {
    let id = id(&path.1, "appointment")?;
    Ok(HttpResponse::Ok().json(visits::get_appointment(&state, &caller!(auth, None), auth.org.id, id).await?))
}

pub async fn cancel_appointment(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsInvite>,
    ClientAddr(addr): ClientAddr,
    path: Path,
) -> Result<HttpResponse, AppError> {
    let id = id(&path.1, "appointment")?;
    Ok(HttpResponse::Ok().json(visits::cancel_appointment(&state, &caller!(auth, addr), auth.org.id, id).await?))
}

pub async fn list_visits(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsRead>,
    query: web::Query<VisitFilter>,
) -> Result<HttpResponse, AppError> {
    Ok(no_store(HttpResponse::Ok()).json(visits::list(&state, &caller!(auth, None), auth.org.id, &query).await?))
}

pub async fn get_visit(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsRead>,
    path: Path,
) -> Result<HttpResponse, AppError> {
    let visit = visits::get(&state, &caller!(auth, None), auth.org.id, id(&path.1, "visit")?).await?;
    Ok(no_store(HttpResponse::Ok()).json(visit))
}

pub async fn walk_in(
    state: web::Data<App>,
    auth: Authorized<policy::VisitsCheckIn>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<WalkIn>,
) -> Result<HttpResponse, AppError> {
    let checked_in = visits::walk_in(&state, &caller!(auth, addr), auth.org.id, body).await?;
    Ok(no_store(HttpResponse::Created()).json(checked_in))
}

pub async fn arrive(
    state: web::Data<App>,
    auth: Authorized<policy::VisitsCheckIn>,
    ClientAddr(addr): ClientAddr,
    path: Path,
) -> Result<HttpResponse, AppError> {
    let actor = caller!(auth, addr).actor();
    Ok(HttpResponse::Ok().json(visits::arrive(&state, actor, auth.org.id, id(&path.1, "visit")?).await?))
}

pub async fn check_in(
    state: web::Data<App>,
    auth: Authorized<policy::VisitsCheckIn>,
    ClientAddr(addr): ClientAddr,
    path: Path,
) -> Result<HttpResponse, AppError> {
    let checked_in = visits::check_in(&state, &caller!(auth, addr), auth.org.id, id(&path.1, "visit")?).await?;
    Ok(no_store(HttpResponse::Ok()).json(checked_in))
}

pub async fn check_out(
    state: web::Data<App>,
    auth: Authorized<policy::VisitsCheckIn>,
    ClientAddr(addr): ClientAddr,
    path: Path,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok()
        .json(visits::check_out(&state, &caller!(auth, addr), auth.org.id, id(&path.1, "visit")?).await?))
}

pub async fn cancel_visit(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsInvite>,
    ClientAddr(addr): ClientAddr,
    path: Path,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(visits::cancel(&state, &caller!(auth, addr), auth.org.id, id(&path.1, "visit")?).await?))
}

pub async fn review(
    state: web::Data<App>,
    auth: Authorized<policy::DenyListManage>,
    ClientAddr(addr): ClientAddr,
    path: Path,
    Json(body): Json<Review>,
) -> Result<HttpResponse, AppError> {
    let visit = visits::review(&state, &caller!(auth, addr), auth.org.id, id(&path.1, "visit")?, body).await?;
    Ok(HttpResponse::Ok().json(visit))
}

pub async fn create_department(
    state: web::Data<App>,
    auth: Authorized<policy::UsersManage>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<hosts::DepartmentInput>,
) -> Result<HttpResponse, AppError> {
    let department = hosts::create_department(&state, &caller!(auth, addr), auth.org.id, body).await?;
    Ok(HttpResponse::Created().json(department))
}

pub async fn list_departments(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsRead>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(hosts::list_departments(&state, auth.org.id, &query).await?))
}

pub async fn delete_department(
    state: web::Data<App>,
    auth: Authorized<policy::UsersManage>,
    ClientAddr(addr): ClientAddr,
    path: Path,
) -> Result<HttpResponse, AppError> {
    hosts::delete_department(&state, &caller!(auth, addr), auth.org.id, id(&path.1, "department")?).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn list_hosts(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsRead>,
    query: web::Query<hosts::HostQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(hosts::list_hosts(&state, auth.org.id, &query).await?))
}

pub async fn set_host(
    state: web::Data<App>,
    auth: Authorized<policy::VisitorsInvite>,
    ClientAddr(addr): ClientAddr,
    path: Path,
    Json(body): Json<hosts::HostSettings>,
) -> Result<HttpResponse, AppError> {
    let host = hosts::set_host(&state, &caller!(auth, addr), auth.org.id, id(&path.1, "host")?, body).await?;
    Ok(HttpResponse::Ok().json(host))
}

pub async fn muster(
    state: web::Data<App>,
    auth: Authorized<policy::CheckinsRead>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(no_store(HttpResponse::Ok()).json(hosts::muster(&state, auth.org.id, &query).await?))
}
