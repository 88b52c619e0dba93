// llm-onprem gateway: the model name router (njs 0.7, Debian's libnginx-mod-http-js).
// Installed by roles/gateway; the gateway site imports it (js_import) and runs it
// after the client key check. Options and behaviour: roles/gateway/README.md.
//
// The site gives it, in $llm_onprem_routes, the table module_utils/gateway.py
// makes from the inventory: {"models": {served model name: upstream group},
// "pools": [every stable upstream group], "canary": {served model name: {"pool":
// the candidate's group, "percent", "threshold"}}}. An empty "models" means no
// model name is known: every request goes to the one group.
//
// route  (POST on the paths whose JSON body names a model): the body's "model"
//        picks the upstream group ($llm_onprem_pool), then an internal redirect to
//        @llm_onprem_route proxies the request (body included) there. Unknown
//        model: 404 as vLLM answers it; no model: the only model, or 400 when there
//        are several; a body that is not JSON: 400. Other methods go to every
//        instance (llm_onprem_instances), which answer for themselves.
//        Canary split: for a model with a candidate, the client's key (the one the
//        site checked: the Authorization bearer, else x-api-key) picks the side,
//        sticky: bucket = first 4 bytes of SHA-256(key), big-endian, mod 10000;
//        bucket < threshold (percent * 100) goes to the candidate. The key is never
//        logged; $llm_onprem_side says "stable" or "candidate" for the access log.
// models (GET /v1/models): every group's /v1/models (subrequests), their "data"
//        merged and de-duplicated by id; 502 when none answers.
//
// Errors have the shape of vLLM's own: {"error": {"message", "type", "param", "code"}}.

var ROUTE_LOCATION = '@llm_onprem_route';
var MODELS_URI = '/_llm_onprem/models/';
// How much of a model name the access log keeps.
var LOG_MODEL_MAX = 256;
// The canary split's buckets (module_utils/gateway.py CANARY_BUCKETS).
var CANARY_BUCKETS = 10000;
var crypto = require('crypto');

function hasOwn(object, key) {
    return Object.prototype.hasOwnProperty.call(object, key);
}

function routes(r) {
    return JSON.parse(r.variables.llm_onprem_routes);
}

function sendError(r, status, type, message, param) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(status, JSON.stringify({
        error: {message: message, type: type, param: param === undefined ? null : param, code: status}
    }) + '\n');
}

function forward(r, pool) {
    if (pool !== undefined) {
        r.variables.llm_onprem_pool = pool;
    }
    r.internalRedirect(ROUTE_LOCATION);
}

// A client key's bucket, as module_utils/gateway.py canary_bucket computes it.
function bucket(key) {
    var hex = crypto.createHash('sha256').update(key).digest('hex');
    return parseInt(hex.slice(0, 8), 16) % CANARY_BUCKETS;
}

// The key the site accepted: the bearer when it matched, else the x-api-key header.
function clientKey(r) {
    var auth;
    if (r.variables.llm_onprem_bearer_ok === '1') {
        auth = r.headersIn.Authorization || '';
        return auth.replace(/^[Bb]earer +/, '');
    }
    return r.headersIn['X-Api-Key'] || '';
}

// The model's group, or its candidate's for the clients whose bucket is below the threshold.
function pick(r, table, model) {
    var canary = table.canary && hasOwn(table.canary, model) ? table.canary[model] : null;
    if (canary === null) {
        return table.models[model];
    }
    if (canary.threshold > 0 && bucket(clientKey(r)) < canary.threshold) {
        r.variables.llm_onprem_side = 'candidate';
        return canary.pool;
    }
    r.variables.llm_onprem_side = 'stable';
    return table.models[model];
}

function route(r) {
    var table = routes(r);
    var known = Object.keys(table.models);
    var text;
    var body;
    var model;

    if (r.method !== 'POST') {
        forward(r);
        return;
    }
    try {
        text = r.requestText;
    } catch (e) {
        // Only when the body went to a file: client_body_buffer_size keeps it in memory.
        r.error('llm-onprem gateway: cannot read the request body: ' + e.message);
        sendError(r, 500, 'InternalServerError', 'The gateway could not read the request body.');
        return;
    }
    try {
        body = JSON.parse(text === undefined ? '' : text);
    } catch (e) {
        sendError(r, 400, 'BadRequestError', 'The request body is not valid JSON: ' + e.message + '.');
        return;
    }
    if (body !== null && typeof body === 'object' && !Array.isArray(body)) {
        model = body.model;
    }
    if (model === undefined || model === null) {
        if (known.length > 1) {
            sendError(r, 400, 'BadRequestError', 'The request names no model and this gateway serves several: '
                + known.join(', ') + '. Set "model" to one of them.', 'model');
            return;
        }
        forward(r, known.length === 1 ? pick(r, table, known[0]) : table.pools[0]);
        return;
    }
    if (typeof model !== 'string') {
        sendError(r, 400, 'BadRequestError', 'The model must be a string.', 'model');
        return;
    }
    r.variables.llm_onprem_model = model.length > LOG_MODEL_MAX ? model.slice(0, LOG_MODEL_MAX) : model;
    if (known.length === 0) {
        forward(r, table.pools[0]);
        return;
    }
    if (!hasOwn(table.models, model)) {
        sendError(r, 404, 'NotFoundError', 'The model `' + model + '` does not exist.', 'model');
        return;
    }
    forward(r, pick(r, table, model));
}

function listOf(reply) {
    var list;
    if (!reply || reply.status !== 200) {
        return null;
    }
    try {
        list = JSON.parse(reply.responseText);
    } catch (e) {
        return null;
    }
    return list !== null && typeof list === 'object' && Array.isArray(list.data) ? list.data : null;
}

function merge(r, pools, replies) {
    var seen = {};
    var data = [];
    var answered = 0;
    replies.forEach(function (reply, i) {
        var entries = listOf(reply);
        if (entries === null) {
            r.warn('llm-onprem gateway: no model list from upstream group ' + pools[i]
                + (reply ? ' (status ' + reply.status + ')' : ''));
            return;
        }
        answered += 1;
        entries.forEach(function (entry) {
            if (entry !== null && typeof entry === 'object' && typeof entry.id === 'string'
                    && !hasOwn(seen, entry.id)) {
                seen[entry.id] = true;
                data.push(entry);
            }
        });
    });
    if (answered === 0) {
        sendError(r, 502, 'BadGatewayError', 'No model instance answered /v1/models.');
        return;
    }
    r.headersOut['Content-Type'] = 'application/json';
    r.return(200, JSON.stringify({object: 'list', data: data}) + '\n');
}

function models(r) {
    var table = routes(r);
    if (r.method !== 'GET') {
        forward(r);
        return;
    }
    Promise.all(table.pools.map(function (pool) {
        return r.subrequest(MODELS_URI + pool, {method: 'GET'}).then(function (reply) {
            return reply;
        }, function () {
            return null;
        });
    })).then(function (replies) {
        merge(r, table.pools, replies);
    });
}

export default {route: route, models: models, bucket: bucket};
