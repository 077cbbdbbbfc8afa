package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// num writes a number for people: never in e-notation, thousands grouped,
// with fewer decimals the larger it is (whole numbers have none; below 1,
// three significant digits, at most 9 decimals).
func num(v float64) string {
	a := math.Abs(v)
	var s string
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'f', -1, 64)
	case v == math.Trunc(v) && a < 1e15:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1000:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		s = strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 10:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	case a >= 1:
		s = strconv.FormatFloat(v, 'f', 3, 64)
	default:
		dec := min(9, 2-int(math.Floor(math.Log10(a))))
		s = strconv.FormatFloat(v, 'f', dec, 64)
	}
	return group(s)
}

// group puts a comma between each three digits of the whole part.
func group(s string) string {
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if frac != "" {
		return sign + b.String() + "." + frac
	}
	return sign + b.String()
}

// span writes a duration for people: 30d, 1d 6h, 45m, 90s.
func span(d time.Duration) string {
	d = d.Round(time.Second)
	days, rest := d/(24*time.Hour), d%(24*time.Hour)
	parts := []string{}
	if days > 0 {
		parts = append(parts, fmt.Sprintf("%dd", days))
	}
	for _, u := range []struct {
		d time.Duration
		s string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := rest / u.d; n > 0 {
			parts = append(parts, fmt.Sprintf("%d%s", n, u.s))
			rest -= n * u.d
		}
	}
	if len(parts) == 0 {
		return "0s"
	}
	return strings.Join(parts, " ")
}
