# Evaluates cases with Flipper 0.25.4 (Debian's ruby-flipper) fed from a server speaking the
# Flipper HTTP API, and writes the answers as JSON.
#
# usage: ruby flipper_check.rb BASE_URL CASES_JSON OUT_JSON [AUTH_HEADER_VALUE]
#   BASE_URL   e.g. http://127.0.0.1:PORT/flipper/api
#   CASES_JSON [{"flag": "f", "actor": {"flipper_id": "User;1", "groups": ["admins"]} | null}, ...]
#   OUT_JSON   [true, false, ...] = flipper.enabled?(flag, actor) (no actor argument for null)
#
# Debian's package lacks lib/flipper/adapters/http*.rb, so this does what the 0.25.4 HTTP
# adapter's get_all does: GET BASE_URL/features with the adapter's headers, then
# result_for_feature/value_for_gate for each feature. Those per-feature hashes are exactly what
# the HTTP adapter hands to Flipper::GateValues, so they become the source of a
# Flipper::Adapters::Memory unchanged (writing them through Feature#enable_* instead would run
# extra validation and conversions the HTTP adapter does not). Exits 1 on any status but 200.
require 'json'
require 'net/http'
require 'set'
require 'socket'
require 'uri'
require 'flipper'
require 'flipper/adapters/memory'
require 'flipper/version'

base_url, cases_path, out_path, auth = ARGV
abort 'usage: ruby flipper_check.rb BASE_URL CASES_JSON OUT_JSON [AUTH_HEADER_VALUE]' unless out_path

def fail!(msg)
  warn "flipper_check: FAILED: #{msg}"
  exit 1
end
fail!("expected Flipper 0.25.4, loaded #{Flipper::VERSION}") unless Flipper::VERSION == '0.25.4'

# -- the request (0.25.4 Http::Client: DEFAULT_HEADERS merged over the Client-* headers) --
uri = URI(base_url)
uri.path += '/features'
headers = {
  'Client-Language' => 'ruby',
  'Client-Language-Version' => "#{RUBY_VERSION} p#{RUBY_PATCHLEVEL} (#{RUBY_RELEASE_DATE})",
  'Client-Platform' => RUBY_PLATFORM,
  'Client-Engine' => defined?(RUBY_ENGINE) ? RUBY_ENGINE : '',
  'Client-Pid' => Process.pid.to_s,
  'Client-Thread' => Thread.current.object_id.to_s,
  'Client-Hostname' => Socket.gethostname,
  'Content-Type' => 'application/json',
  'Accept' => 'application/json',
  'User-Agent' => "Flipper HTTP Adapter v#{Flipper::VERSION}",
}
headers['Authorization'] = auth if auth
request = Net::HTTP::Get.new(uri.request_uri)
request.initialize_http_header(headers)
http = Net::HTTP.new(uri.host, uri.port)
http.use_ssl = uri.scheme == 'https'
http.open_timeout = http.read_timeout = 10
begin
  response = http.request(request)
rescue StandardError => e
  fail!("GET #{uri}: #{e.class}: #{e.message}")
end
fail!("GET #{uri} answered #{response.code}: #{response.body.to_s[0, 300]}") unless response.is_a?(Net::HTTPOK)

# -- get_all: parse and convert like the 0.25.4 adapter (raises if "features" is missing) --
begin
  parsed_features = JSON.parse(response.body).fetch('features')
rescue StandardError => e
  fail!("GET #{uri}: unusable body (#{e.class}: #{e.message})")
end
# (stricter than the adapter, which would take any body: catch a wrong URL early)
fail!("GET #{uri}: every feature needs a string \"key\" and a \"gates\" array") unless
  parsed_features.is_a?(Array) && parsed_features.all? { |f| f['key'].is_a?(String) && f['gates'].is_a?(Array) }
gates_by_key = parsed_features.each_with_object({}) { |f, h| h[f['key']] = f['gates'] }

source = {}
gates_by_key.each do |key, api_gates|
  feature = Flipper::Feature.new(key, nil)
  api_gates ||= []
  result = Flipper::Adapters::Memory.default_config
  feature.gates.each do |gate| # matched on the gate *key*; unknown keys (expression) ignored
    api_gate = api_gates.detect { |ag| ag['key'] == gate.key.to_s }
    next unless api_gate
    value = api_gate['value']
    result[gate.key] =
      case gate.data_type
      when :boolean, :integer then value ? value.to_s : value
      when :set then value ? value.to_set : Set.new
      end
  end
  source[feature.key] = result
end
fail!("GET #{uri} returned no features") if source.empty?

# -- groups: a registered block per name, true iff the actor lists the name --
source.values.flat_map { |r| r[:groups].to_a }.map(&:to_s).uniq.each do |name|
  Flipper.register(name) { |actor| actor.respond_to?(:groups) && Array(actor.groups).map(&:to_s).include?(name) }
end

Actor = Struct.new(:flipper_id, :groups)
flipper = Flipper.new(Flipper::Adapters::Memory.new(source))

results = JSON.parse(File.read(cases_path)).map do |c|
  a = c['actor']
  if a.nil?
    flipper.enabled?(c.fetch('flag'))
  else
    flipper.enabled?(c.fetch('flag'), Actor.new(a.fetch('flipper_id'), a['groups'] || []))
  end
end
File.write(out_path, JSON.pretty_generate(results))
