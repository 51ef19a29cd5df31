// p2c_peak_ewma: of two distinct endpoints drawn at random, the one with the
// lower expected cost of one more call (Finagle's p2cPeakEwma, Linkerd's
// balancer). Cost = peak-EWMA latency x (calls in flight + 1), Finagle's
// formula: the latency average jumps to any sample above it and decays
// toward newer, lower samples (and toward zero when idle) with time
// constant `decay` (EndpointStats::PeakEwmaNanos).
//
//   "load_balancer": [{"p2c_peak_ewma": {"decay": "10s", "default_rtt": "30ms",
//                                        "failure_penalty": "1s"}}]
//
// Config (durations as strings):
//   decay            default "10s" (Finagle's and Linkerd's), 1ms..1h: the
//                    EWMA's time constant. Shorter reacts faster and forgets
//                    sooner.
//   default_rtt      default "30ms" (Linkerd's DEFAULT_EWMA), 1us..1m: the
//                    latency assumed for an endpoint none of whose calls has
//                    completed yet, while calls to it are in flight.
//   failure_penalty  default "1s", 0..1h: a failed call counts as at least
//                    this much latency; "0s" turns it off.
//
// New endpoints. Finagle gives an endpoint with no latency history cost 0
// (it gets the next call at once) and a prohibitive cost while that first
// call is pending; Linkerd instead assumes default_rtt (30ms) and lets it
// decay. Here an endpoint that has never completed a call and has none in
// flight costs 0, as in Finagle, so a new endpoint is probed at once and
// never starves behind faster ones (EndpointStats does not decay the
// initial value, so a default above the service's latency would otherwise
// keep it out for good); while its first calls are in flight it costs
// default_rtt x (in_flight + 1), as in Linkerd. 30ms therefore only bounds
// how many calls a new, possibly cold, endpoint takes before its first
// answer: few when the others answer in milliseconds, more when they are
// slow.
//
// Failure penalty. Latency alone sends traffic into an endpoint that fails
// fast (a 503 in 50us looks faster than a success in 1ms; the problem
// Linkerd's load biaser fixes with a default penalty of 5s, brpc's p2c with
// up to 30s). With the penalty a failure is a sample of at least 1s, which
// the peak EWMA takes at once; the endpoint then costs about
// 1s x exp(-t / decay) and comes back into play when that falls to its
// peers' cost: about decay x ln(1s / peer latency), ~70s against 1ms peers
// with the default decay, and every further failure starts that over. 1s is
// above the latency of any healthy RPC this library expects (so a failure
// never looks better than a success) while, since the wait grows only with
// the logarithm of the penalty, larger values would buy little more than
// an endpoint parked longer after a stray error.
//
// The policy tells the client to make its endpoints' EndpointStats with
// these settings (StatsOptions()), and Build() also sets failure_penalty on
// the stats it is given, so a changed penalty applies to existing
// endpoints (decay and default_rtt apply to stats made afterwards).
//
// Picking compares the two costs by their ratio: when both endpoints have
// samples and the same decay, "now" cancels out, so a pick needs one exp()
// and no clock read; otherwise (a new endpoint with calls pending, stats
// made with another decay) it reads the PolicyContext clock. The result is
// that of comparing PeakEwmaNanos(now) x (in_flight + 1) directly.
//
// Weights: with equal weights the two candidates are drawn uniformly; when
// weights differ they are drawn in proportion to weight (distinct when a
// redraw or two finds one), so a heavier endpoint is compared more often.
// Unhealthy endpoints are skipped (all of them are used when none is
// healthy); weight-0 endpoints are used only when every usable endpoint has
// weight 0.
#ifndef MESHLIB_LB_P2C_PEAK_EWMA_P2C_PEAK_EWMA_H_
#define MESHLIB_LB_P2C_PEAK_EWMA_P2C_PEAK_EWMA_H_

#include <memory>

#include "meshlib/lb/policy.h"

namespace meshlib::lb {

std::unique_ptr<PolicyFactory> MakeP2cPeakEwmaFactory();

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_P2C_PEAK_EWMA_P2C_PEAK_EWMA_H_
