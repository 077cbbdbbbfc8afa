package estimator

import (
	"math"
	"time"
)

// The marginal weighting's linear cost model, fitted per device:
//
//	E_k = P_idle·idle_k + P_busy·busy_k + c_prompt·prompt_k + c_decode·decode_k
//
// for every block k of settled intervals (fitBlock long): its energy E_k,
// its seconds without and with a request, and the prompt and completion
// tokens its requests processed in it (each request's tokens spread over
// its phases). The fit is a non-negative least squares over exponentially
// forgotten sums, so it follows a device whose load changes and needs a
// fixed amount of memory.
//
// decode_k is a + r·b: where every request in the block has exact phases
// (traces), a counts the tokens decoded in the steps that prefilled (one
// per decoding sequence per prefill step) and b the decoding
// sequence-seconds outside them, decoded at r steps a second (fitted from
// the sums: the spans' own completion tokens are exact in total). A
// prefill step is long, and the sequences decoding through it emit one
// token each: spreading each request's completion tokens evenly over its
// decode puts too many in the blocks with much prefill, and the fit then
// takes some of a prompt token's cost for the decode it displaced
// (docs/methodology.md, "Fidelity against ground truth"). Elsewhere a is the
// evenly spread completion tokens and b is 0.
const (
	fitVars = 4
	// rawVars: idle, busy, prompt, a, b; the sums of a and b, and of the
	// evenly spread completion tokens, over blocks with phases fit r.
	rawVars = 5
	// minFitBlocks busy blocks (forgetting counted) before the fit is used.
	minFitBlocks = 50
)

type fitter struct {
	tau float64 // seconds
	// the block being summed
	bx       [rawVars]float64
	bd       float64 // evenly spread completion tokens of the intervals with phases
	by       float64
	bEnd     int64
	bTainted bool
	xtx      [rawVars][rawVars]float64
	xty      [rawVars]float64
	yy       float64
	busy     float64 // busy blocks, forgetting counted
	// sums over blocks with phases: a, b, the spread completion tokens
	sa, sb, sd float64
}

// fitBlock: intervals are fitted in sums over blocks this long (aligned to
// the epoch), where the phase model's misplacing of tokens between
// neighbouring intervals averages out.
const fitBlock = int64(time.Second)

// block sums intervals into blocks of fitBlock and folds each block in when
// it is complete. A block with an interval whose
// requests were not all charged (history ran out) is left out.
// spread: the evenly spread completion tokens when x has phases (x[4] > 0).
func (f *fitter) block(t1 int64, tainted bool, x [rawVars]float64, spread, y float64) {
	if f.bEnd == 0 {
		f.bEnd = floorTo(t1, fitBlock) + fitBlock
	}
	if t1 > f.bEnd {
		if !f.bTainted && f.bx[0]+f.bx[1] > 0 {
			f.add(f.bx[0]+f.bx[1], f.bx, f.bd, f.by)
		}
		f.bx, f.bd, f.by, f.bTainted = [rawVars]float64{}, 0, 0, false
		f.bEnd = ceilTo(t1, fitBlock)
	}
	for i := range x {
		f.bx[i] += x[i]
	}
	f.bd += spread
	f.by += y
	f.bTainted = f.bTainted || tainted
}

// add folds in one block of dt seconds.
func (f *fitter) add(dt float64, x [rawVars]float64, spread, y float64) {
	if f.tau > 0 {
		k := math.Exp(-dt / f.tau)
		for i := range f.xtx {
			for j := range f.xtx[i] {
				f.xtx[i][j] *= k
			}
			f.xty[i] *= k
		}
		f.yy *= k
		f.busy *= k
		f.sa, f.sb, f.sd = f.sa*k, f.sb*k, f.sd*k
	}
	if x[4] > 0 {
		f.sa, f.sb, f.sd = f.sa+x[3], f.sb+x[4], f.sd+spread
	}
	for i := range x {
		for j := range x {
			f.xtx[i][j] += x[i] * x[j]
		}
		f.xty[i] += x[i] * y
	}
	f.yy += y * y
	if x[1] > 0 {
		f.busy++
	}
}

// solve returns the non-negative least-squares coefficients: the subset of
// regressors whose unconstrained solution is non-negative with the least
// residual (exact for four regressors: every subset is tried). ok is false
// until enough busy blocks were seen or when nothing can be solved.
func (f *fitter) solve() (beta [fitVars]float64, ok bool) {
	if f.busy < minFitBlocks {
		return beta, false
	}
	xtx, xty := f.normal()
	// Scale to unit diagonal: seconds and thousands of tokens side by side.
	var s [fitVars]float64
	for i := range s {
		s[i] = math.Sqrt(xtx[i][i])
	}
	best := 0.0
	for mask := 1; mask < 1<<fitVars; mask++ {
		var idx []int
		for i := 0; i < fitVars; i++ {
			if mask&(1<<i) != 0 && s[i] > 0 {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 || len(idx) != popcount(mask) {
			continue
		}
		n := len(idx)
		var a [fitVars][fitVars + 1]float64
		for r, i := range idx {
			for c, j := range idx {
				a[r][c] = xtx[i][j] / (s[i] * s[j])
			}
			a[r][n] = xty[i] / s[i]
		}
		z, solved := gauss(&a, n)
		if !solved {
			continue
		}
		var b [fitVars]float64
		neg := false
		for r, i := range idx {
			if z[r] < 0 {
				neg = true
			}
			b[i] = z[r] / s[i]
		}
		if neg {
			continue
		}
		// Residual sum of squares from the normal equations.
		sse := f.yy
		for i := range b {
			sse -= 2 * b[i] * xty[i]
			for j := range b {
				sse += b[i] * b[j] * xtx[i][j]
			}
		}
		if !ok || sse < best-1e-12*math.Abs(best) {
			best, beta, ok = sse, b, true
		}
	}
	return beta, ok
}

// normal is the normal equations of the four regressors, decode = a + r·b.
// Without phases b is 0 and they are the raw sums' first four.
func (f *fitter) normal() (xtx [fitVars][fitVars]float64, xty [fitVars]float64) {
	r := 0.0
	if f.sb > 0 {
		r = max(f.sd-f.sa, 0) / f.sb
	}
	// t maps the raw regressors onto the four: row 3 is a + r·b.
	t := func(i, j int) float64 {
		switch {
		case i < 3:
			if i == j {
				return 1
			}
			return 0
		case j == 3:
			return 1
		case j == 4:
			return r
		}
		return 0
	}
	for i := 0; i < fitVars; i++ {
		for k := 0; k < rawVars; k++ {
			tik := t(i, k)
			if tik == 0 {
				continue
			}
			xty[i] += tik * f.xty[k]
			for j := 0; j < fitVars; j++ {
				for l := 0; l < rawVars; l++ {
					if tjl := t(j, l); tjl != 0 {
						xtx[i][j] += tik * f.xtx[k][l] * tjl
					}
				}
			}
		}
	}
	return xtx, xty
}

func popcount(m int) int {
	n := 0
	for ; m != 0; m &= m - 1 {
		n++
	}
	return n
}

// gauss solves the n×n system in a (augmented with its right-hand side) by
// elimination with partial pivoting; false when it is singular.
func gauss(a *[fitVars][fitVars + 1]float64, n int) (x [fitVars]float64, ok bool) {
	for c := 0; c < n; c++ {
		p := c
		for r := c + 1; r < n; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		if math.Abs(a[p][c]) < 1e-10 {
			return x, false
		}
		a[c], a[p] = a[p], a[c]
		for r := c + 1; r < n; r++ {
			k := a[r][c] / a[c][c]
			for j := c; j <= n; j++ {
				a[r][j] -= k * a[c][j]
			}
		}
	}
	for r := n - 1; r >= 0; r-- {
		v := a[r][n]
		for j := r + 1; j < n; j++ {
			v -= a[r][j] * x[j]
		}
		x[r] = v / a[r][r]
	}
	return x, true
}
