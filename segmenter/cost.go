package segmenter

import (
	"net/http"
	"strings"

	"github.com/heraldhq/herald/internal/pricing"
	"github.com/heraldhq/herald/schemas"
)

// Where a campaign's template category came from (the preview's
// "category_source"): Meta prices by it, and a MARKETING template also
// skips users who opted out.
const (
	// categoryFromRequest: the request named it (request.category).
	categoryFromRequest = "request"
	// categoryAssumedMarketing: nothing named it; MARKETING is assumed,
	// the dearest category and the one that honours opt-outs.
	categoryAssumedMarketing = "assumed_marketing"
)

// templateCategory decides the template category of a campaign request
// from the request, and says where it came from; when the app's templates
// are on TopicTemplates, templateCategoryOf replaces it with the
// template's (categoryFromTemplate).
func templateCategory(req *apiRequest) (category, source string, aerr *apiError) {
	switch c := strings.ToUpper(strings.TrimSpace(req.Category)); c {
	case "":
		return CategoryMarketing, categoryAssumedMarketing, nil
	case CategoryMarketing, CategoryUtility, CategoryAuthentication:
		return c, categoryFromRequest, nil
	}
	return "", "", refuse(http.StatusBadRequest, "request.category", "%q is not MARKETING, UTILITY or AUTHENTICATION", req.Category)
}

// previewCounts turns the partitions' counts into what the rate card
// prices: each partition's sendable users by country, in and out of the
// service window, under the category it counted for (category when its
// record names none or one the rate card does not know). A record without
// the window split (an older segmenter's) counts all its users as outside
// the window: the estimate errs on the dear side.
func previewCounts(parts map[int32]*schemas.CampaignPreview, category string) []pricing.Count {
	var counts []pricing.Count
	for _, pv := range parts {
		c := pv.Category
		if _, err := pricing.ParseCategory(c); err != nil {
			c = category
		}
		outside := pv.OutsideByCountry
		if outside == nil {
			outside = pv.ByCountry
		}
		for country, n := range pv.ByCountry {
			if n <= 0 {
				continue
			}
			out := min(max(outside[country], 0), n)
			counts = append(counts,
				pricing.Count{Category: c, Country: country, N: int64(out)},
				pricing.Count{Category: c, Country: country, InServiceWindow: true, N: int64(n - out)})
		}
	}
	return counts
}
