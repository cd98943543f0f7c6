# Self-test for unleash_check.rb and flipper_check.rb without Vexil: serves hand-written bodies
# shaped like /work/shared/reference (unleash-client-api.md, flipper-http-api.md) from WEBrick
# and checks the answers against the reference hash vectors (bucketing.md).
# usage: ruby selftest.rb   (exit 0 = both scripts work end to end, including their failures)
require 'json'
require 'rbconfig'
require 'tmpdir'
require 'webrick'

UNLEASH = { 'version' => 2, 'features' => [
  # murmur3("Feature.flexibleRollout.10:174") -> 10 (in), ":499" -> 32 (out)
  { 'name' => 'Feature.flexibleRollout.10', 'enabled' => true, 'strategies' => [{ 'name' => 'flexibleRollout',
    'parameters' => { 'groupId' => 'Feature.flexibleRollout.10', 'rollout' => '10', 'stickiness' => 'default' } }] },
  # 3.2.5 variants: murmur3("new-checkout:user-42", 0) % 1000 + 1 = 775 -> the second 500
  { 'name' => 'new-checkout', 'enabled' => true, 'strategies' => [{ 'name' => 'default',
    'constraints' => [{ 'contextName' => 'email', 'operator' => 'IN', 'values' => ['a@example.com'] }] }],
    'variants' => [{ 'name' => 'blue', 'weight' => 500, 'payload' => { 'type' => 'string', 'value' => 'b' } },
                   { 'name' => 'green', 'weight' => 500, 'payload' => nil }] },
  { 'name' => 'off', 'enabled' => false, 'strategies' => [] },
  { 'name' => 'bad-op', 'enabled' => true, 'strategies' => [{ 'name' => 'default',
    'constraints' => [{ 'contextName' => 'email', 'operator' => 'STR_ENDS_WITH', 'values' => ['x'] }] }] },
] }
FLIPPER = { 'features' => [
  # crc32("my_feature" + "User;7") % 100000 = 12468 (in at 25), "User;1" -> 31009 (out)
  { 'key' => 'my_feature', 'state' => 'conditional', 'gates' => [
    { 'key' => 'boolean', 'name' => 'boolean', 'value' => nil },
    { 'key' => 'expression', 'name' => 'expression', 'value' => nil },
    { 'key' => 'actors', 'name' => 'actor', 'value' => ['User;99'] },
    { 'key' => 'percentage_of_actors', 'name' => 'percentage_of_actors', 'value' => '25' },
    { 'key' => 'percentage_of_time', 'name' => 'percentage_of_time', 'value' => nil },
    { 'key' => 'groups', 'name' => 'group', 'value' => ['admins'] }] },
  # "new-checkout" + "user-43" -> 1364 (in at 1.5), "user-42" -> 65666 (out)
  { 'key' => 'new-checkout', 'state' => 'conditional', 'gates' => [
    { 'key' => 'percentage_of_actors', 'name' => 'percentage_of_actors', 'value' => '1.5' }] },
  { 'key' => 'all-on', 'state' => 'on', 'gates' => [{ 'key' => 'boolean', 'name' => 'boolean', 'value' => 'true' }] },
] }

server = WEBrick::HTTPServer.new(Port: 0, BindAddress: '127.0.0.1', AccessLog: [],
                                 Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN))
server.mount_proc('/') do |req, res|
  res['Content-Type'] = 'application/json'
  res.status, res.body =
    if req['Authorization'] != 'tok' then [401, '{"message":"no"}']
    elsif req.path == '/api/client/features' then [200, JSON.generate(UNLEASH)]
    elsif req.path.start_with?('/api/client/') then [202, '']
    elsif req.path == '/flipper/api/features' then [200, JSON.generate(FLIPPER)]
    else [404, '{}']
    end
end
Thread.new { server.start }
base = "http://127.0.0.1:#{server.config[:Port]}"

failures = []
check = lambda do |what, ok|
  failures << what unless ok
  puts "#{ok ? 'ok  ' : 'FAIL'} #{what}"
end
run = lambda do |script, url, cases, token|
  Dir.mktmpdir do |dir|
    File.write("#{dir}/cases.json", JSON.generate(cases))
    args = [RbConfig.ruby, File.join(__dir__, script), url, "#{dir}/cases.json", "#{dir}/out.json", token].compact
    ok = system(*args, err: File::NULL)
    [ok, ok ? JSON.parse(File.read("#{dir}/out.json")) : nil]
  end
end

ucases = [
  { 'flag' => 'Feature.flexibleRollout.10', 'context' => { 'userId' => '174' } },
  { 'flag' => 'Feature.flexibleRollout.10', 'context' => { 'userId' => '499' } },
  { 'flag' => 'new-checkout', 'context' => { 'userId' => 'user-42', 'properties' => { 'email' => 'a@example.com' } }, 'variant' => true },
  { 'flag' => 'off', 'variant' => true },
  { 'flag' => 'bad-op' },
]
ok, out = run.call('unleash_check.rb', "#{base}/api", ucases, 'tok')
check.call('unleash_check runs', ok)
if ok
  check.call('unleash rollout vectors', out[0]['enabled'] == true && out[1]['enabled'] == false)
  check.call('unleash variant vector', out[2] == { 'enabled' => true, 'variant' => { 'name' => 'green', 'enabled' => true, 'payload' => nil } })
  check.call('unleash disabled flag', out[3] == { 'enabled' => false, 'variant' => { 'name' => 'disabled', 'enabled' => false, 'payload' => nil } })
  check.call('unleash unknown operator raises', out[4]['enabled'].nil? && out[4]['error'].start_with?('TypeError'))
end
check.call('unleash_check fails on 401', !run.call('unleash_check.rb', "#{base}/api", ucases, nil)[0])
check.call('unleash_check fails on 404', !run.call('unleash_check.rb', "#{base}/nope/api", ucases, 'tok')[0])

fcases = [
  { 'flag' => 'my_feature', 'actor' => { 'flipper_id' => 'User;7' } },
  { 'flag' => 'my_feature', 'actor' => { 'flipper_id' => 'User;1' } },
  { 'flag' => 'my_feature', 'actor' => { 'flipper_id' => 'User;99' } },
  { 'flag' => 'my_feature', 'actor' => { 'flipper_id' => 'User;1', 'groups' => ['admins'] } },
  { 'flag' => 'my_feature', 'actor' => nil },
  { 'flag' => 'new-checkout', 'actor' => { 'flipper_id' => 'user-43' } },
  { 'flag' => 'new-checkout', 'actor' => { 'flipper_id' => 'user-42' } },
  { 'flag' => 'all-on', 'actor' => nil },
  { 'flag' => 'unknown', 'actor' => { 'flipper_id' => 'User;7' } },
]
ok, out = run.call('flipper_check.rb', "#{base}/flipper/api", fcases, 'tok')
check.call('flipper_check runs', ok)
check.call('flipper answers', out == [true, false, true, true, false, true, false, true, false]) if ok
check.call('flipper_check fails on 401', !run.call('flipper_check.rb', "#{base}/flipper/api", fcases, nil)[0])

server.shutdown
exit(failures.empty? ? 0 : 1)
