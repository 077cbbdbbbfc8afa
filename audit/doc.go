// Package audit keeps the most recent records and how the meter intervals
// they were charged from were split (Store), serves them on the admin
// listener as GET /v1/requests/{id}, explains a record by recomputing it
// (?explain=1), and prints that answer as `deadlabourd audit` shows it.
package audit
